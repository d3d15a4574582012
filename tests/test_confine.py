"""A learning task's code, confined on real workers: another OS user, no network, no file of
the worker's but its own."""

from __future__ import annotations

import argparse
import os
import subprocess

import numpy as np
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


def test_learning_code_runs_as_the_task_user_without_network_or_the_workers_files(cluster):
    ensure_task_user()
    cluster.start_coordinator()
    secrets = []
    for seed, (name, rows) in enumerate(WORKERS.items()):
        data_dir = cluster.data_dir(name)
        np.savez(data_dir / "train.npz", **regression_data(rows, seed))
        (data_dir / "other.csv").write_text("a,b\n1,2\n")  # a dataset the task does not name
        data_dir.chmod(0o700)  # as the README asks of a data dir
        secrets += [cluster.kit(name) / "tls.key", data_dir / "other.csv"]
        cluster.start_worker(name, None, True, "--task-user", TASK_USER)
    port = int(cluster.address.rsplit(":", 1)[1])
    client = cluster.client()
    task_id = client.create_task(Confined(secrets, port).build())
    assert client.wait(task_id), client.get_task(task_id).error
    metrics = client.get_metrics(task_id)
    assert len(metrics) == 2
    for round_metrics in metrics:
        assert round_metrics["read_secret"] == 0.0
        assert round_metrics["connected"] == 0.0
        assert round_metrics["uid"] != 0.0
    assert client.get_result(task_id)


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
