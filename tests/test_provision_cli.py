"""`deltaflow provision` as a command: create, add, revoke, crl, and its one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cluster import ROOT
from sdk.trust import Kit, Verifier


def provision(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deltaflow", "provision", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )


def test_create_add_revoke_crl(tmp_path):
    out = tmp_path / "fed"
    done = provision("--out", str(out), "--coordinator", "127.0.0.1:6700",
                     "--workers", "w1,w2", "--users", "alice:admin,bob:analyst")
    assert done.returncode == 0, done.stderr
    for path in ["coordinator", "workers/w1", "workers/w2", "users/alice", "users/bob"]:
        assert f"wrote {out / path}\n" in done.stdout
        Kit.load(out / path)
    assert "copy each kit to its holder" in done.stdout

    done = provision("add", "--ca", str(out / "ca"), "--workers", "w3", "--users", "carol:analyst")
    assert done.returncode == 0, done.stderr
    assert f"wrote {out / 'workers/w3'}\n" in done.stdout
    assert Kit.load(out / "users/carol").role == "analyst"

    done = provision("revoke", "--ca", str(out / "ca"), "bob")
    assert done.returncode == 0, done.stderr
    assert "revoked bob" in done.stdout
    coordinator = Kit.load(out / "coordinator")
    verifier = Verifier(coordinator.ca_pem, coordinator.crl_path.read_bytes())
    assert verifier.is_revoked(Kit.load(out / "users/bob").identity.serial)

    done = provision("crl", "--ca", str(out / "ca"), "--days", "7")
    assert done.returncode == 0, done.stderr
    assert verifier.set_crl(coordinator.crl_path.read_bytes())  # a newer number
    assert verifier.is_revoked(Kit.load(out / "users/bob").identity.serial)


@pytest.mark.parametrize("args, message", [
    (["--workers", "w1,bad/name"], "'bad/name' is not a valid name"),
    (["--workers", "w1", "--users", "w1:analyst"], "the name w1 is given twice"),
])
def test_errors_are_one_sentence(tmp_path, args, message):
    done = provision("--out", str(tmp_path), "--coordinator", "127.0.0.1:6700", *args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "ca").exists()
