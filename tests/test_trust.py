"""Trust material: provisioning, kits, the verifier and its CRL, signed tasks, mutual TLS."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import shutil
import stat
import time
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from sdk.proto import task_pb2
from sdk.trust import (
    Kit, TrustError, Verifier, add_participants, check_name, create_federation, identity_from_pem,
    refresh_crl, revoke, sign_task,
)
from sdk.trust.authority import Authority, utcnow

COORDINATORS = ["127.0.0.1:6700", "coord.example.org:6700", "[::1]:6700"]
WORKERS = ["w1", "w2"]
USERS = [("alice", "admin"), ("bob", "analyst")]


def make_federation(out: Path) -> Path:
    create_federation(out, COORDINATORS, WORKERS, USERS)
    return out


@pytest.fixture
def fed(tmp_path) -> Path:
    return make_federation(tmp_path / "fed")


@pytest.fixture
def other(tmp_path) -> Path:
    """Another federation, with the same names, under its own CA."""
    return make_federation(tmp_path / "other")


def kit(fed: Path, path: str) -> Kit:
    return Kit.load(fed / path)


def verifier(fed: Path) -> Verifier:
    coordinator = kit(fed, "coordinator")
    return Verifier(coordinator.ca_pem, coordinator.crl_path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


KITS = ["coordinator", "workers/w1", "workers/w2", "users/alice", "users/bob"]


def test_layout_and_modes(fed):
    assert sorted(p.name for p in (fed / "ca").iterdir()) == [
        "ca.crt", "ca.key", "federation.toml", "issued.json", "revoked.crl"
    ]
    assert mode(fed / "ca") == 0o700 and mode(fed / "ca" / "ca.key") == 0o600
    for path in KITS:
        files = {"ca.crt", "tls.crt", "tls.key", "kit.toml"}
        if path == "coordinator":
            files.add("revoked.crl")
        assert {p.name for p in (fed / path).iterdir()} == files
        assert mode(fed / path) == 0o700 and mode(fed / path / "tls.key") == 0o600
    assert [p for p in fed.rglob("ca.key")] == [fed / "ca" / "ca.key"]
    assert kit(fed, "workers/w1").coordinator == "127.0.0.1:6700"


def test_every_kit_loads_and_verifies(fed):
    check = verifier(fed)
    for path, (name, role) in zip(KITS, [("coordinator", "coordinator"), ("w1", "worker"),
                                         ("w2", "worker"), *USERS]):
        loaded = kit(fed, path)
        assert (loaded.name, loaded.role) == (name, role)
        assert check.check_certificate(loaded.cert_pem) == loaded.identity
        assert check.check_certificate(loaded.certificate_der).name == name
        assert check.verify(b"data", loaded.sign(b"data"), loaded.certificate_der).name == name
    check.check_crl_fresh()


def test_kit_load_names_what_is_wrong(fed, other):
    (fed / "users/bob/tls.key").unlink()
    with pytest.raises(TrustError, match=r"tls\.key is missing: run `deltaflow provision`"):
        kit(fed, "users/bob")
    shutil.copy(fed / "users/alice/tls.key", fed / "users/bob/tls.key")
    with pytest.raises(TrustError, match="is not the key of"):
        kit(fed, "users/bob")
    shutil.copy(other / "ca/ca.crt", fed / "users/alice/ca.crt")
    with pytest.raises(TrustError, match=r"tls\.crt is not issued by"):
        kit(fed, "users/alice")
    (fed / "workers/w1/kit.toml").write_text('name = "w2"\nrole = "worker"\ncoordinator = "h:1"\n')
    with pytest.raises(TrustError, match="is w1's .* says w2"):
        kit(fed, "workers/w1")


def test_another_federations_certificate_is_refused(fed, other):
    refused = "certificate of alice is not issued by this federation's CA"
    with pytest.raises(TrustError, match=refused):
        verifier(fed).check_certificate(kit(other, "users/alice").cert_pem)


def test_certificate_outside_its_validity_is_refused(fed):
    authority = Authority.load(fed / "ca")
    long_ago = utcnow() - datetime.timedelta(days=400)
    old, _ = authority.issue("old", "analyst", valid_days=30, now=long_ago)
    expired = r"certificate of old expired on \d{4}-\d\d-\d\d \d\d:\d\d UTC"
    with pytest.raises(TrustError, match=expired):
        verifier(fed).check_certificate(old)
    with pytest.raises(TrustError, match="not valid before"):
        verifier(fed).check_certificate(kit(fed, "users/bob").cert_pem, now=time.time() - 86400)


def test_revoked_certificate_is_refused(fed):
    check = verifier(fed)
    assert revoke(fed / "ca", "bob") == [fed / "ca/revoked.crl", fed / "coordinator/revoked.crl"]
    assert check.set_crl((fed / "coordinator/revoked.crl").read_bytes())
    with pytest.raises(TrustError, match="certificate of bob was revoked"):
        check.check_certificate(kit(fed, "users/bob").cert_pem)
    assert check.check_certificate(kit(fed, "users/alice").cert_pem).name == "alice"
    assert verifier(fed).is_revoked(kit(fed, "users/bob").identity.serial)
    with pytest.raises(ValueError, match="no participant named carol was issued by this CA"):
        revoke(fed / "ca", "carol")


def test_crl_numbers_only_go_up(fed):
    check = verifier(fed)
    old = (fed / "ca/revoked.crl").read_bytes()
    revoke(fed / "ca", "bob")
    assert check.set_crl((fed / "ca/revoked.crl").read_bytes())
    assert not check.set_crl(old)  # replaying the old list does not lift bob's revocation
    assert check.is_revoked(kit(fed, "users/bob").identity.serial)
    assert check.set_crl(check.crl_der)  # the same list again, as DER


def test_crl_of_another_ca_is_refused(fed, other):
    with pytest.raises(TrustError, match="not signed by this federation's CA"):
        verifier(fed).set_crl((other / "ca/revoked.crl").read_bytes())


def test_stale_crl_is_detected(fed):
    check = Verifier(kit(fed, "coordinator").ca_pem)
    with pytest.raises(TrustError, match="no revocation list"):
        check.check_crl_fresh()
    refresh_crl(fed / "ca", days=1)
    assert check.set_crl((fed / "coordinator/revoked.crl").read_bytes())
    check.check_crl_fresh()
    assert check.crl_next_update == pytest.approx(time.time() + 86400, abs=60)
    with pytest.raises(TrustError, match=r"past its next update .*deltaflow provision crl --ca"):
        check.check_crl_fresh(now=time.time() + 2 * 86400)


def test_task_signature_round_trip(fed):
    alice = kit(fed, "users/alice")
    weights = hashlib.sha256(b"weights").digest()
    signature = sign_task(alice, b"spec", weights)
    identity, claims = verifier(fed).verify_task(signature, b"spec")
    assert identity == alice.identity
    assert (claims.signer, claims.weights_sha256, len(claims.nonce)) == ("alice", weights, 16)
    assert claims.expires_at == pytest.approx(time.time() + 3600, abs=60)
    assert sign_task(alice, b"spec").claims != signature.claims  # a fresh nonce each time


def test_task_signature_refusals(fed):
    check = verifier(fed)
    alice, bob = kit(fed, "users/alice"), kit(fed, "users/bob")
    signature = sign_task(alice, b"spec")

    with pytest.raises(TrustError, match="not the one alice signed"):
        check.verify_task(signature, b"spec!")

    claims = task_pb2.TaskClaims.FromString(signature.claims)
    claims.expires_at += 3600
    altered = task_pb2.TaskSignature()
    altered.CopyFrom(signature)
    altered.claims = claims.SerializeToString()
    with pytest.raises(TrustError, match="signature of alice does not match"):
        check.verify_task(altered, b"spec")

    borrowed = task_pb2.TaskSignature()
    borrowed.CopyFrom(signature)
    borrowed.certificate = bob.certificate_der
    with pytest.raises(TrustError, match="signature of bob does not match"):
        check.verify_task(borrowed, b"spec")

    with pytest.raises(TrustError, match=r"expired at .*joined before then"):
        check.verify_task(signature, b"spec", now=time.time() + 7200)

    with pytest.raises(TrustError, match="w1 has the role worker; this needs admin or analyst"):
        check.verify_task(sign_task(kit(fed, "workers/w1"), b"spec"), b"spec")

    claims = task_pb2.TaskClaims(
        spec_sha256=hashlib.sha256(b"spec").digest(), expires_at=time.time() + 60, signer="bob"
    ).SerializeToString()
    impostor = task_pb2.TaskSignature(
        claims=claims, signature=alice.sign(claims), certificate=alice.certificate_der
    )
    with pytest.raises(TrustError, match="claims name the signer bob"):
        check.verify_task(impostor, b"spec")


@pytest.mark.parametrize("name", ["a\nb", "a b", "a/b", "x" * 65, "", ".a", "-a", "é"])
def test_bad_names_are_refused(tmp_path, name):
    with pytest.raises(ValueError, match="not a valid name: use 1 to 64 letters"):
        check_name(name)
    with pytest.raises(ValueError, match="not a valid name"):
        create_federation(tmp_path, COORDINATORS, [name], [])
    assert not (tmp_path / "ca").exists()


def test_good_names_pass():
    for name in ["x" * 64, "a", "site-1.b_2", "_x"]:
        assert check_name(name) == name


def test_duplicates_and_roles_are_refused(tmp_path, fed):
    with pytest.raises(ValueError, match="the name a is given twice"):
        create_federation(tmp_path / "x", COORDINATORS, ["a"], [("a", "analyst")])
    with pytest.raises(ValueError, match="coordinator is reserved"):
        create_federation(tmp_path / "x", COORDINATORS, ["coordinator"], [])
    with pytest.raises(ValueError, match="a user is admin or analyst"):
        create_federation(tmp_path / "x", COORDINATORS, [], [("eve", "worker")])
    with pytest.raises(ValueError, match="already exists"):
        make_federation(fed)


def test_add_issues_from_the_same_ca(fed):
    serials = {entry.identity.serial for entry in map(lambda p: kit(fed, p), KITS)}
    kits = add_participants(fed / "ca", None, ["w3"], [("carol", "analyst")])
    assert kits == [fed / "workers/w3", fed / "users/carol"]
    check = verifier(fed)
    for path in kits:
        added = Kit.load(path)
        assert check.check_certificate(added.cert_pem) == added.identity
        assert added.identity.serial not in serials and added.coordinator == "127.0.0.1:6700"
    with pytest.raises(ValueError, match="w1 is already issued to a participant"):
        add_participants(fed / "ca", None, ["w1"], [])
    revoke(fed / "ca", "bob")
    with pytest.raises(ValueError, match="bob is already issued .* revoked"):
        add_participants(fed / "ca", fed / "elsewhere", [], [("bob", "admin")])


def test_coordinator_certificate_names_its_addresses(fed):
    cert = x509.load_pem_x509_certificate(kit(fed, "coordinator").cert_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")
    ]
    assert names.get_values_for_type(x509.DNSName) == ["coord.example.org"]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages
    user = x509.load_pem_x509_certificate(kit(fed, "users/alice").cert_pem).extensions
    names = user.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["alice"]
    usages = user.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH not in usages


class RecordingHealth(health.HealthServicer):
    """The health service, noting each caller's auth context."""

    def __init__(self) -> None:
        super().__init__()
        self.peers: list[dict] = []

    def Check(self, request, context):
        self.peers.append(context.auth_context())
        return super().Check(request, context)


def test_mutual_tls(fed, other):
    servicer = RecordingHealth()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", kit(fed, "coordinator").server_credentials())
    server.start()
    alice, stranger = kit(fed, "users/alice"), kit(other, "users/alice")

    def check(credentials: grpc.ChannelCredentials | None) -> None:
        address = f"127.0.0.1:{port}"
        channel = (
            grpc.secure_channel(address, credentials) if credentials
            else grpc.insecure_channel(address)
        )
        with channel:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)

    try:
        check(alice.channel_credentials())
        (peer,) = servicer.peers
        assert identity_from_pem(peer["x509_pem_cert"][0]) == alice.identity
        refused = [
            stranger.channel_credentials(),  # trusts another CA
            grpc.ssl_channel_credentials(  # trusts ours but presents another CA's certificate
                root_certificates=alice.ca_pem, private_key=stranger.key_pem,
                certificate_chain=stranger.cert_pem,
            ),
            grpc.ssl_channel_credentials(root_certificates=alice.ca_pem),  # no certificate
            None,  # plaintext
        ]
        for credentials in refused:
            with pytest.raises(grpc.RpcError) as error:
                check(credentials)
            assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        assert len(servicer.peers) == 1
    finally:
        server.stop(None)
