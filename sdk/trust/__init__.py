"""Trust material every side uses: identities, kits, verification, task signing, provisioning."""

from .identity import (
    ANONYMOUS, ROLES, USER_ROLES, Identity, TrustError, check_name, identity_from_pem,
    identity_of,
)
from .kit import Kit, sign_task
from .provision import add_participants, create_federation, refresh_crl, revoke
from .verify import Verifier

__all__ = [
    "ANONYMOUS", "ROLES", "USER_ROLES", "Identity", "Kit", "TrustError", "Verifier", "add_participants",
    "check_name", "create_federation", "identity_from_pem", "identity_of", "refresh_crl",
    "revoke", "sign_task",
]
