"""A participant's kit: loading it, its TLS credentials, and signing with its key."""

from __future__ import annotations

import functools
import hashlib
import secrets
import time
import tomllib
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sdk.proto import task_pb2
from sdk.wire import normalize_address

from .identity import ROLES, Identity, TrustError, check_name, identity_of

CA_FILE, CERT_FILE, KEY_FILE, TOML_FILE = "ca.crt", "tls.crt", "tls.key", "kit.toml"
CRL_FILE = "revoked.crl"  # the coordinator's kit only
GET_ONE = (
    "run `deltaflow provision` (or `deltaflow provision add`) and copy the participant's kit folder"
)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TrustError(f"{path} is missing: {GET_ONE}") from None
    except OSError as error:
        raise TrustError(f"{path} cannot be read ({error.strerror})") from None


# Where `deltaflow provision` puts each role's kit, for messages that say which one is needed.
KIT_FOLDERS = {"admin": "DIR/users/NAME", "analyst": "DIR/users/NAME",
               "worker": "DIR/workers/NAME", "coordinator": "DIR/coordinator"}


@dataclass(frozen=True)
class Kit:
    """A participant's folder: ca.crt, tls.crt, tls.key, kit.toml (and revoked.crl for the
    coordinator), checked to belong together."""

    path: Path
    name: str
    role: str
    coordinator: str  # the coordinator's default address, HOST:PORT
    ca_pem: bytes = field(repr=False)
    cert_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)

    @classmethod
    def load(cls, path: Path | str, roles: Collection[str] | None = None) -> Kit:
        """The kit in folder `path`, of one of `roles` when given; TrustError naming what is
        missing or does not match."""
        path = Path(path)
        if not path.is_dir():
            raise TrustError(f"{path} is not a kit folder: {GET_ONE}")
        toml_path = path / TOML_FILE
        try:
            settings = tomllib.loads(_read(toml_path).decode())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise TrustError(f"{toml_path} is not valid TOML ({error}): {GET_ONE}") from None
        name, role, coordinator = (settings.get(key) for key in ("name", "role", "coordinator"))
        if not all(isinstance(value, str) for value in (name, role, coordinator)):
            raise TrustError(f"{toml_path} needs the strings name, role and coordinator: {GET_ONE}")
        try:
            check_name(name)
            coordinator = normalize_address(coordinator)
        except ValueError as error:
            raise TrustError(f"{toml_path}: {error}") from None
        if role not in ROLES:
            raise TrustError(f"{toml_path}: role {role!r} is not one of {', '.join(ROLES)}")

        ca_pem, cert_pem, key_pem = (_read(path / file) for file in (CA_FILE, CERT_FILE, KEY_FILE))
        try:
            ca = x509.load_pem_x509_certificate(ca_pem)
            cert = x509.load_pem_x509_certificate(cert_pem)
            key = serialization.load_pem_private_key(key_pem, None)
        except (ValueError, TypeError):
            raise TrustError(
                f"{path} holds a certificate or key that is not PEM: {GET_ONE}"
            ) from None
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            raise TrustError(
                f"{path / CERT_FILE} is not issued by {path / CA_FILE}: {GET_ONE}"
            ) from None
        identity = identity_of(cert)
        if (identity.name, identity.role) != (name, role):
            raise TrustError(
                f"{path / CERT_FILE} is {identity.name}'s ({identity.role}) but {toml_path} "
                f"says {name} ({role})"
            )
        if not isinstance(key, ec.EllipticCurvePrivateKey) or (
            key.public_key().public_numbers() != cert.public_key().public_numbers()
        ):
            raise TrustError(f"{path / KEY_FILE} is not the key of {path / CERT_FILE}: {GET_ONE}")
        if role == "coordinator" and not (path / CRL_FILE).is_file():
            raise TrustError(f"{path / CRL_FILE} is missing: copy it from the CA's folder (DIR/ca)")
        if roles is not None and role not in roles:
            folders = ", ".join(sorted({KIT_FOLDERS[r] for r in roles}))
            raise TrustError(f"{path} is the kit of {name}, a {role}; this needs the kit of "
                             f"{' or '.join(sorted(roles))} ({folders})")
        return cls(path, name, role, coordinator, ca_pem, cert_pem, key_pem)

    @functools.cached_property
    def identity(self) -> Identity:
        return identity_of(self._certificate)

    @property
    def crl_path(self) -> Path:
        return self.path / CRL_FILE

    @property
    def certificate_der(self) -> bytes:
        return self._certificate.public_bytes(serialization.Encoding.DER)

    def server_credentials(self) -> grpc.ServerCredentials:
        """TLS that presents this kit's certificate and requires one from the CA of every client."""
        return grpc.ssl_server_credentials(
            [(self.key_pem, self.cert_pem)], root_certificates=self.ca_pem, require_client_auth=True
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """TLS that trusts only this federation's CA and presents this kit's certificate."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem, private_key=self.key_pem, certificate_chain=self.cert_pem
        )

    def sign(self, data: bytes) -> bytes:
        """An ECDSA P-256 SHA-256 signature (DER) over `data` with this kit's key."""
        return self._key.sign(data, ec.ECDSA(hashes.SHA256()))

    @functools.cached_property
    def _certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    @functools.cached_property
    def _key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.key_pem, None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)  # Kit.load checked it
        return key


def sign_task(
    kit: Kit, spec_bytes: bytes, weights_sha256: bytes = b"", expires_in: float = 3600.0
) -> task_pb2.TaskSignature:
    """The user's signature over a task's exact bytes (and its weights' digest), with a fresh
    nonce, valid for `expires_in` seconds."""
    claims = task_pb2.TaskClaims(
        spec_sha256=hashlib.sha256(spec_bytes).digest(),
        weights_sha256=weights_sha256,
        nonce=secrets.token_bytes(16),
        expires_at=time.time() + expires_in,
        signer=kit.name,
    ).SerializeToString()
    return task_pb2.TaskSignature(
        claims=claims, signature=kit.sign(claims), certificate=kit.certificate_der
    )
