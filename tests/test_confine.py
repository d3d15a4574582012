"""A learning task's code, confined on real workers: another OS user, no network, no file of
the worker's but its own, nothing of the warm template it forked from but its modules."""

from __future__ import annotations

import argparse
import os
import stat
import subprocess
import uuid
from pathlib import Path

import numpy as np
import psutil
import pytest
from learning_tasks import Confined, regression_data

from worker.engine import EngineLimits, add_engine_arguments, limits_from_args

TASK_USER = "deltaflow-task"
WORKERS = {"w1": 60, "w2": 100}


def ensure_task_user() -> None:
    """Creates the task user where missing; fails, saying why, unless this runs as root and
    that user can run this Python."""
    if os.geteuid() != 0:
        pytest.fail("confinement needs root: run this test as root (CI does)")
    if subprocess.run(["id", "-u", TASK_USER], capture_output=True, check=False).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", TASK_USER], check=True)
    try:
        EngineLimits(task_user=TASK_USER)
    except ValueError as error:
        pytest.fail(f"this machine cannot confine tasks: {error}")


def children(daemon, marker: str) -> list[psutil.Process]:
    """The daemon's child processes whose command line has `marker`."""
    return [child for child in psutil.Process(daemon.process.pid).children()
            if marker in " ".join(child.cmdline())]


def test_learning_code_runs_as_the_task_user_without_network_or_the_workers_files(cluster):
    """The task's process forks from the worker's warm template (started with the worker),
    imports no torch itself, and reaches neither the template (which would fork it a process
    outside its confinement) nor the resource tracker (which unlinks, as the worker's user,
    the shared memory it is told of when the worker stops)."""
    ensure_task_user()
    cluster.warm_start = True
    cluster.start_coordinator()
    secrets = []
    for seed, (name, rows) in enumerate(WORKERS.items()):
        data_dir = cluster.data_dir(name)
        np.savez(data_dir / "train.npz", **regression_data(rows, seed))
        (data_dir / "other.csv").write_text("a,b\n1,2\n")  # a dataset the task does not name
        data_dir.chmod(0o700)  # as the README asks of a data dir
        secrets += [cluster.kit(name) / "tls.key", data_dir / "other.csv"]
        cluster.start_worker(name, None, True, "--task-user", TASK_USER)
    templates, trackers = [], []
    for daemon in cluster.workers.values():
        [template] = children(daemon, "multiprocessing.forkserver")  # before any task
        templates += [c.laddr for c in template.net_connections(kind="unix") if c.laddr]
        trackers += children(daemon, "multiprocessing.resource_tracker")
    assert len(templates) == len(WORKERS) and all(
        stat.S_ISSOCK(os.stat(path).st_mode) for path in templates)
    victim = Path("/dev/shm") / f"deltaflow-victim-{uuid.uuid4().hex}"
    victim.write_bytes(b"the worker's")
    port = int(cluster.address.rsplit(":", 1)[1])
    client = cluster.client()
    try:
        task_id = client.create_task(Confined(secrets, port, templates, victim.name).build())
        assert client.wait(task_id), client.get_task(task_id).error
        metrics = client.get_metrics(task_id)
        assert len(metrics) == 2
        for round_metrics in metrics:
            assert round_metrics["read_secret"] == 0.0
            assert round_metrics["connected"] == 0.0
            assert round_metrics["uid"] != 0.0
            assert round_metrics["reached_template"] == 0.0
            assert round_metrics["wrote_a_pipe"] == 0.0
            assert round_metrics["warm"] == 1.0
        assert client.get_result(task_id)
        for daemon in cluster.workers.values():
            daemon.stop()
        assert trackers and not psutil.wait_procs(trackers, timeout=30)[1]  # all ended
        assert victim.exists()
    finally:
        victim.unlink(missing_ok=True)


def limits(*flags: str) -> EngineLimits:
    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    return limits_from_args(parser.parse_args(list(flags)))


def test_task_user_is_refused_without_root_or_for_an_unknown_user(monkeypatch):
    assert limits().task_user is None
    with monkeypatch.context() as patched, pytest.raises(ValueError, match="running as root"):
        patched.setattr(os, "geteuid", lambda: 1000)
        limits("--task-user", TASK_USER)
    if os.geteuid() == 0:
        with pytest.raises(ValueError, match="no such user"):
            limits("--task-user", "no-such-deltaflow-user")
