"""Checking certificates, signatures and signed tasks against the CA and its revocation list."""

from __future__ import annotations

import datetime
import hashlib
import time
from collections.abc import Collection

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf.message import DecodeError

from sdk.proto import task_pb2

from .identity import USER_ROLES, Identity, TrustError, identity_of, printable_name

CRL_HINT = "run `deltaflow provision crl --ca DIR/ca` and copy revoked.crl to the coordinator's kit"


def load_certificate(data: bytes) -> x509.Certificate:
    """A certificate from PEM or DER bytes."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise TrustError("the certificate is not a PEM or DER X.509 certificate") from None


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    """A revocation list from PEM or DER bytes."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError:
        raise TrustError("the revocation list is not a PEM or DER X.509 CRL") from None


def crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        raise TrustError("the revocation list has no CRL number") from None


def format_time(seconds: float) -> str:
    """Unix seconds as "2026-01-01 00:00 UTC"."""
    try:
        moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    except (ValueError, OverflowError, OSError):
        return repr(seconds)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _subject_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return printable_name(str(names[0].value)) if names else "an unnamed participant"


class Verifier:
    """One per process: the federation's CA and the newest revocation list it has seen."""

    def __init__(self, ca_pem: bytes, crl: bytes | None = None) -> None:
        self._ca = load_certificate(ca_pem)
        self._crl: x509.CertificateRevocationList | None = None
        if crl is not None:
            self.set_crl(crl)

    def set_crl(self, data: bytes) -> bool:
        """Take a CA-signed CRL (PEM or DER) unless it is older (a lower CRL number) than the
        one held, so that no old list can be replayed to lift a revocation. True if taken."""
        crl = load_crl(data)
        if crl.issuer != self._ca.subject or not crl.is_signature_valid(self._ca.public_key()):
            raise TrustError("the revocation list is not signed by this federation's CA")
        number = crl_number(crl)
        if self._crl is not None and number < crl_number(self._crl):
            return False
        self._crl = crl
        return True

    @property
    def crl_der(self) -> bytes | None:
        return None if self._crl is None else self._crl.public_bytes(serialization.Encoding.DER)

    @property
    def crl_next_update(self) -> float | None:
        crl = self._crl
        if crl is None or crl.next_update_utc is None:
            return None
        return crl.next_update_utc.timestamp()

    def check_crl_fresh(self, now: float | None = None) -> None:
        """TrustError when no revocation list is held or the one held is past its next update."""
        if self._crl is None:
            raise TrustError(f"no revocation list is loaded: {CRL_HINT}")
        next_update = self.crl_next_update
        if next_update is None or (time.time() if now is None else now) > next_update:
            when = (
                "has no next update" if next_update is None
                else f"is past its next update ({format_time(next_update)})"
            )
            raise TrustError(f"the revocation list {when}: {CRL_HINT}")

    def is_revoked(self, serial: int) -> bool:
        crl = self._crl
        return crl is not None and crl.get_revoked_certificate_by_serial_number(serial) is not None

    def check_certificate(
        self,
        cert: bytes | x509.Certificate,
        roles: Collection[str] | None = None,
        now: float | None = None,
    ) -> Identity:
        """The identity of a certificate the CA issued directly, valid at `now`, not revoked,
        and of one of `roles` when given; TrustError otherwise."""
        if isinstance(cert, bytes):
            cert = load_certificate(cert)
        try:
            cert.verify_directly_issued_by(self._ca)
        except (ValueError, TypeError, InvalidSignature):
            raise TrustError(
                f"the certificate of {_subject_name(cert)} is not issued by this federation's CA"
            ) from None
        identity = identity_of(cert)
        now = time.time() if now is None else now
        if now < cert.not_valid_before_utc.timestamp():
            raise TrustError(
                f"the certificate of {identity.name} is not valid before "
                f"{format_time(cert.not_valid_before_utc.timestamp())}: check this machine's clock"
            )
        if now > identity.not_after:
            raise TrustError(
                f"the certificate of {identity.name} expired on {format_time(identity.not_after)}: "
                "issue a new one with `deltaflow provision add`"
            )
        if self.is_revoked(identity.serial):
            raise TrustError(f"the certificate of {identity.name} was revoked")
        if roles is not None and identity.role not in roles:
            raise TrustError(
                f"{identity.name} has the role {identity.role}; "
                f"this needs {' or '.join(sorted(roles))}"
            )
        return identity

    def verify(
        self,
        data: bytes,
        signature: bytes,
        cert_der: bytes,
        roles: Collection[str] | None = None,
        now: float | None = None,
    ) -> Identity:
        """The signer's identity when `signature` is its ECDSA-SHA256 signature over `data`
        and its certificate passes check_certificate; TrustError otherwise."""
        cert = load_certificate(cert_der)
        identity = self.check_certificate(cert, roles, now)
        public_key = cert.public_key()
        try:
            if not isinstance(public_key, ec.EllipticCurvePublicKey):
                raise InvalidSignature
            public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise TrustError(
                f"the signature of {identity.name} does not match what it signs"
            ) from None
        return identity

    def verify_task(
        self, signature: task_pb2.TaskSignature, spec_bytes: bytes, now: float | None = None
    ) -> tuple[Identity, task_pb2.TaskClaims]:
        """The user who signed a task and their claims, when the signature covers exactly
        `spec_bytes` and has not expired; TrustError otherwise."""
        now = time.time() if now is None else now
        identity = self.verify(
            signature.claims, signature.signature, signature.certificate, USER_ROLES, now
        )
        claims = task_pb2.TaskClaims()
        try:
            claims.ParseFromString(signature.claims)
        except DecodeError:
            raise TrustError(f"the task's claims signed by {identity.name} do not parse") from None
        if claims.signer != identity.name:
            raise TrustError(
                f"the task's claims name the signer {printable_name(claims.signer)}, "
                f"but the certificate is {identity.name}'s"
            )
        if claims.spec_sha256 != hashlib.sha256(spec_bytes).digest():
            raise TrustError(f"the task is not the one {identity.name} signed: its bytes differ")
        if not now <= claims.expires_at:  # a NaN expiry is expired too
            raise TrustError(
                f"the task's signature expired at {format_time(claims.expires_at)} "
                "(it must be joined before then)"
            )
        return identity, claims
