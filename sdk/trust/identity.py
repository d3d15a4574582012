"""Who a certificate names: participant names, roles, and the errors of trust."""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

ROLES = ("admin", "analyst", "worker", "coordinator")
USER_ROLES = frozenset({"admin", "analyst"})

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


class TrustError(Exception):
    """A certificate, key, kit, signature or revocation list that cannot be trusted."""


def check_name(name: str) -> str:
    """`name` when it is a valid participant name, else ValueError saying what is allowed."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a valid name: use 1 to 64 letters, digits, '-', '_' or '.', "
            "not starting with '.' or '-'"
        )
    return name


def printable_name(name: str) -> str:
    """`name` as it may appear in a message: as is when valid, quoted (escaped) otherwise."""
    try:
        return check_name(name)
    except ValueError:
        return repr(name[:64])


@dataclass(frozen=True)
class Identity:
    """A participant as its certificate names it."""

    name: str
    role: str
    serial: int
    not_after: float  # unix seconds


# Whoever calls, when nobody is identified (daemons started with --insecure, on loopback).
ANONYMOUS = Identity(name="anonymous", role="anonymous", serial=0, not_after=math.inf)


def _attribute(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> str | None:
    values = cert.subject.get_attributes_for_oid(oid)
    return str(values[0].value) if len(values) == 1 else None


def identity_of(cert: x509.Certificate) -> Identity:
    """The name (CN) and role (OU) a certificate carries; TrustError when either is missing."""
    name = _attribute(cert, NameOID.COMMON_NAME)
    role = _attribute(cert, NameOID.ORGANIZATIONAL_UNIT_NAME)
    if name is None or role is None:
        raise TrustError("the certificate names no participant (one CN and one OU are required)")
    try:
        check_name(name)
    except ValueError as error:
        raise TrustError(f"the certificate's name is not valid: {error}") from None
    if role not in ROLES:
        raise TrustError(
            f"the certificate of {name} has the unknown role {printable_name(role)}: "
            f"roles are {', '.join(ROLES)}"
        )
    return Identity(name, role, cert.serial_number, cert.not_valid_after_utc.timestamp())


@functools.lru_cache(maxsize=1024)
def identity_from_pem(pem: bytes) -> Identity:
    """identity_of a PEM certificate (as gRPC's auth_context gives the peer's), cached."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise TrustError("the peer's certificate is not a PEM certificate") from None
    return identity_of(cert)
