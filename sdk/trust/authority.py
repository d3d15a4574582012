"""The federation's certificate authority: issuing certificates and revocation lists."""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .identity import ROLES, TrustError, check_name

ORGANIZATION = "deltaflow"
CA_MIN_DAYS = 3650
CLOCK_SKEW = datetime.timedelta(minutes=5)  # certificates start this long before they are made


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """A private key as unencrypted PKCS8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def san_entry(host: str) -> x509.GeneralName:
    """An IP address entry for an IP literal (brackets allowed), a DNS entry otherwise."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return x509.DNSName(host)


@dataclass(frozen=True)
class Authority:
    """A CA certificate with its private key."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, valid_days: int = 365) -> Authority:
        """A new CA, valid for at least ten years."""
        key = new_key()
        now = utcnow()
        subject = x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, f"deltaflow CA {secrets.token_hex(4)}"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        ])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + datetime.timedelta(days=max(valid_days, CA_MIN_DAYS)))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
            .add_extension(_subject_key_identifier(key), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(certificate, key)

    @classmethod
    def load(cls, ca_dir: Path) -> Authority:
        """The CA in `ca_dir` (ca.crt and ca.key, as `deltaflow provision` wrote them)."""
        try:
            certificate = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
            key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)
        except FileNotFoundError as error:
            raise TrustError(
                f"{error.filename} is missing: --ca must name the ca folder "
                "`deltaflow provision` wrote"
            ) from None
        except ValueError:
            raise TrustError(f"{ca_dir} holds no readable ca.crt and ca.key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or (
            key.public_key().public_numbers() != certificate.public_key().public_numbers()
        ):
            raise TrustError(f"{ca_dir}/ca.key is not the key of {ca_dir}/ca.crt")
        return cls(certificate, key)

    def issue(
        self,
        name: str,
        role: str,
        hosts: Iterable[str] = (),
        valid_days: int = 365,
        now: datetime.datetime | None = None,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A new key and its certificate for participant `name` in `role`, valid from `now`
        (default: the present) for `valid_days`, within the CA's own validity. A coordinator
        certificate names `hosts` as its addresses; any other names DNS:`name`."""
        check_name(name)
        if role not in ROLES:
            raise ValueError(f"{role!r} is not a role: roles are {', '.join(ROLES)}")
        key = new_key()
        now = now or utcnow()
        not_after = min(
            now + datetime.timedelta(days=valid_days), self.certificate.not_valid_after_utc
        )
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if role == "coordinator":
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
            alt_names = [san_entry(host) for host in hosts]
        else:
            alt_names = [x509.DNSName(name)]
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([
                x509.NameAttribute(NameOID.COMMON_NAME, name),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            ]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(self._authority_key_identifier(), critical=False)
            .add_extension(_subject_key_identifier(key), critical=False)
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return certificate, key

    def revocation_list(
        self, number: int, revoked: Iterable[tuple[int, datetime.datetime]], days: int = 30
    ) -> x509.CertificateRevocationList:
        """A CRL numbered `number` listing `revoked` (serial, revocation time), valid `days`."""
        now = utcnow()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(now)
            .next_update(now + datetime.timedelta(days=days))
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(self._authority_key_identifier(), critical=False)
        )
        for serial, when in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
            )
        return builder.sign(self.key, hashes.SHA256())

    def _authority_key_identifier(self) -> x509.AuthorityKeyIdentifier:
        ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)


def _subject_key_identifier(key: ec.EllipticCurvePrivateKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(key.public_key())


def _key_usage(
    digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=key_cert_sign,
        crl_sign=crl_sign, encipher_only=False, decipher_only=False,
    )
