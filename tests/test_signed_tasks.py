"""Signed tasks, checked by each worker against the federation's CA and revocation list before
it loads anything: a coordinator that alters a task, makes one up, or replays an expired one
cannot get it run. The worker is a real daemon; its coordinator is one the test serves."""

from __future__ import annotations

import datetime
import hashlib
import os

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cluster import wages
from learning_tasks import Canary, regression_data
from lying_coordinator import LyingCoordinator, serve
from tasks import WageAvg

from sdk import tensors
from sdk.proto import task_pb2
from sdk.trust import Kit, sign_task
from sdk.trust.authority import Authority
from sdk.trust.provision import revoke


def run_on_worker(cluster, liar: LyingCoordinator) -> str:
    """Starts worker w1 against `liar`; the error it answered the liar's request with."""
    wages(10, 1).to_csv(cluster.data_dir("w1") / "wages.csv", index=False)
    np.savez(cluster.data_dir("w1") / "train.npz", **regression_data(20, 1))
    server = serve(liar, cluster)
    try:
        cluster.start_worker("w1", None, False)
        assert liar.answered.wait(60), "the worker never answered"
    finally:
        server.stop(0)
    return liar.error


def analytics(cluster, user: str = "alice", **signing) -> tuple[bytes, task_pb2.TaskSignature]:
    spec = WageAvg().build().serialize()
    return spec, sign_task(Kit.load(cluster.kit(user)), spec, **signing)


def test_a_task_signed_by_a_user_of_the_federation_runs(cluster):
    spec, signature = analytics(cluster)
    liar = LyingCoordinator(spec, signature, phase="join", crl=cluster.crl())
    assert run_on_worker(cluster, liar) == ""
    assert "task 1: signed by alice, checked" in cluster.workers["w1"].log()


@pytest.mark.parametrize("attack, refusal", [
    ("altered bytes", "the task is not the one alice signed: its bytes differ"),
    ("later expiry", "the signature of alice does not match what it signs"),
    ("expired", "the task's signature expired at"),
    ("unsigned", "it is not signed by its submitter"),
    ("signed by a worker", "w2 has the role worker; this needs admin or analyst"),
])
def test_a_worker_refuses_a_task_the_coordinator_changed_or_replayed(cluster, attack, refusal):
    spec, signature = analytics(cluster, expires_in=-1 if attack == "expired" else 3600)
    if attack == "altered bytes":
        altered = task_pb2.TaskSpec.FromString(spec)
        altered.rules.min_clients = 2
        altered.rules.max_clients = 50
        spec = altered.SerializeToString()
    elif attack == "later expiry":
        claims = task_pb2.TaskClaims.FromString(signature.claims)
        claims.expires_at += 86400
        signature.claims = claims.SerializeToString()
    elif attack == "unsigned":
        signature = None
    elif attack == "signed by a worker":
        signature = sign_task(Kit.load(cluster.kit("w2")), spec)
    error = run_on_worker(cluster, LyingCoordinator(spec, signature, "join", crl=cluster.crl()))
    assert error.startswith("worker w1 refused task 1: "), error
    assert refusal in error, error
    log = cluster.workers["w1"].log()
    assert "task 1: joined" not in log


def test_a_worker_refuses_a_revoked_signer_and_a_stale_revocation_list(cluster):
    spec, signature = analytics(cluster, user="bob")
    revoke(cluster.federation / "ca", "bob")
    error = run_on_worker(cluster, LyingCoordinator(spec, signature, "join", crl=cluster.crl()))
    assert "refused task 1: the certificate of bob was revoked" in error
    cluster.workers["w1"].stop()

    spec, signature = analytics(cluster)
    liar = LyingCoordinator(spec, signature, "join", crl=stale_crl(cluster))
    error = run_on_worker(cluster, liar)
    assert "refused task 1: the revocation list is past its next update" in error


def stale_crl(cluster) -> bytes:
    """A revocation list the CA signed, already past its next update."""
    authority = Authority.load(cluster.federation / "ca")
    now = datetime.datetime.now(datetime.timezone.utc)
    crl = (x509.CertificateRevocationListBuilder()
           .issuer_name(authority.certificate.subject)
           .last_update(now - datetime.timedelta(days=2))
           .next_update(now - datetime.timedelta(days=1))
           .add_extension(x509.CRLNumber(1000), critical=False)
           .sign(authority.key, hashes.SHA256()))
    return crl.public_bytes(serialization.Encoding.DER)


def test_a_restarted_worker_keeps_the_newest_revocation_list_it_saw(cluster):
    """A coordinator cannot un-revoke someone by handing a restarted worker an older list."""
    spec, signature = analytics(cluster, user="bob")
    before = cluster.crl()
    revoke(cluster.federation / "ca", "bob")
    error = run_on_worker(cluster, LyingCoordinator(spec, signature, "join", crl=cluster.crl()))
    assert "refused task 1: the certificate of bob was revoked" in error
    cluster.workers["w1"].stop()
    error = run_on_worker(cluster, LyingCoordinator(spec, signature, "join", crl=before))
    assert "refused task 1: the certificate of bob was revoked" in error


@pytest.mark.parametrize("attack", ["none", "altered bytes", "other weights", "expired",
                                    "other weights, called a later round"])
def test_no_code_of_a_changed_learning_task_runs(cluster, tmp_path, attack):
    canary = tmp_path / "canary"
    built = Canary(canary).build()
    weights = b"".join(bytes(chunk) for chunk in tensors.iter_chunks(built.weights))
    spec = built.serialize()
    signature = sign_task(Kit.load(cluster.kit("alice")), spec, hashlib.sha256(weights).digest(),
                          expires_in=-1 if attack == "expired" else 3600)
    if attack == "altered bytes":
        changed = task_pb2.TaskSpec.FromString(spec)
        changed.learning.max_rounds = 1000
        spec = changed.SerializeToString()
    elif attack.startswith("other weights"):
        weights = bytes(len(weights))
    # A later round's weights are a checkpoint, not checked against the signed digest: a
    # coordinator that calls round 1 round 2 (of a one-round task) is refused all the same.
    liar = LyingCoordinator(spec, signature, phase="join", weights=weights, crl=cluster.crl(),
                            round_number=2 if "later round" in attack else 1)
    error = run_on_worker(cluster, liar)
    if attack == "none":
        assert error == "" and canary.read_text().startswith("the task's code ran in process")
    else:
        assert "refused task 1" in error or "do not match the digest" in error, error
        assert not os.path.exists(canary)
