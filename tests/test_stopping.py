"""Stopping, as an operator and a user do it: the daemons on SIGTERM or SIGINT exit 0 within
the local cluster's bound and without a traceback, mid-round; Ctrl-C in `trace` says the task
runs on, in one line, and raises KeyboardInterrupt with no grpc in sight."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap

import grpc
import numpy as np
import pytest
from cluster import ROOT, log_text, wait_for
from learning_tasks import Regression, regression_data
from tasks import WageAvg

from deltaflow.localcluster import STOP_SECONDS
from sdk.proto import services_pb2 as pb
from sdk.proto import services_pb2_grpc


def test_both_daemons_exit_0_on_sigterm_and_sigint_mid_round_without_a_traceback(cluster):
    cluster.start_coordinator()
    for seed, name in enumerate(("w1", "w2")):
        np.savez(cluster.data_dir(name) / "train.npz", **regression_data(40, seed))
        cluster.start_worker(name, None, False, env={"TEST_TRAIN_DELAY": "30"})
    for name in ("w1", "w2"):
        cluster.wait_connected(name)
    client = cluster.client()
    learning = client.create_task(Regression(max_rounds=1, wait_timeout=60,
                                             connection_timeout=60).build())
    waiting = client.create_task(WageAvg(connection_timeout=120).build())  # no wages.csv
    wait_for(lambda: "loaded the task" in log_text(client, learning), 60, "the join phase")
    with cluster.channel() as channel:
        following = services_pb2_grpc.TaskServiceStub(channel).StreamLogs(
            pb.StreamLogsRequest(task_id=waiting, follow=True))
        next(following)

        w1, w2 = cluster.workers["w1"], cluster.workers["w2"]
        w1.signal(signal.SIGINT)  # mid-train, attached to a live coordinator
        assert w1.process.wait(STOP_SECONDS) == 0
        assert cluster.coordinator.stop() == 0  # a follower and a worker attached
        with pytest.raises(grpc.RpcError) as ended:  # with a status the SDK rides out
            list(following)
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert ended.value.details() == "the coordinator is stopping; call again once it is back"
    assert w2.stop() == 0  # while it tries to reconnect
    # A stop leaves a running task RUNNING on disk, for the next start to carry on.
    uri = f"file:{cluster.root / 'state' / 'coordinator.sqlite3'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        states = dict(db.execute("SELECT id, state FROM tasks"))
    assert states[waiting] == pb.TASK_STATE_RUNNING
    for daemon in cluster.daemons:
        assert "Traceback" not in daemon.log(), daemon.log()
    assert "coordinator stopped" in cluster.coordinator.log()


def test_ctrl_c_in_trace_says_the_task_runs_on_and_raises_keyboard_interrupt(cluster):
    cluster.start_coordinator()
    client = cluster.client()
    task_id = client.create_task(WageAvg(connection_timeout=120).build())  # waits for workers
    script = textwrap.dedent(f"""
        from sdk.client import Client
        Client({cluster.address!r}, kit={str(cluster.kit("alice"))!r}).trace({task_id})
    """)
    tracing = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert f"task {task_id} created by alice" in tracing.stdout.readline()
    tracing.send_signal(signal.SIGINT)
    _, stderr = tracing.communicate(timeout=30)
    assert tracing.returncode != 0
    lines = stderr.splitlines()
    assert lines.count(f"stopped following task {task_id}; it is still running") == 1
    assert lines[-1] == "KeyboardInterrupt"
    assert "grpc" not in stderr
    assert client.get_task(task_id).state == pb.TASK_STATE_RUNNING
