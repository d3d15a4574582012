"""`--metrics-listen`: the coordinator's and the workers' /metrics, scraped over HTTP after real
tasks ran, and parsed with prometheus_client's own parser."""

from __future__ import annotations

import re
import runpy
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cluster import wait_for
from deltaflow.samples import regression, wages
from sdk.proto import services_pb2 as pb
from sdk.proto import services_pb2_grpc

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# A holder that lets only root run analytics: alice's task is refused there.
ROOT_ONLY = """\
[analytics]
users = ["root"]
require_secure_aggregation = false
"""


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """The samples at `url`, by (name, sorted labels)."""
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metrics_url(daemon) -> str:
    return wait_for(lambda: re.search(r"metrics at (http://\S+)\n", daemon.log()),
                    what="the metrics URL").group(1)


@pytest.mark.timeout(240)
def test_metrics_after_tasks_ran(cluster):
    cluster.start_coordinator(0, "--metrics-listen", "127.0.0.1:0")
    listen = ("--min-rows", "1", "--metrics-listen", "127.0.0.1:0")
    for seed, name in enumerate(("w1", "w2")):
        np.savez(cluster.data_dir(name) / "regression.npz", **regression(40, seed))
        cluster.start_worker(name, {"wages.csv": wages(20, seed)}, False, *listen)
    cluster.start_worker("w3", {"wages.csv": wages(20, 3)}, False, *listen, policy=ROOT_ONLY)
    for name in ("w1", "w2", "w3"):
        cluster.wait_connected(name)
    coordinator = metrics_url(cluster.coordinator)
    assert coordinator.startswith("http://127.0.0.1:")  # loopback unless told otherwise

    with cluster.client() as client:
        learning = client.create_task(
            runpy.run_path(str(EXAMPLES / "learning_regression.py"))["Regression"]().build())
        analytics = client.create_task(
            runpy.run_path(str(EXAMPLES / "wage_avg.py"))["WageAvg"]().build())
        assert client.wait(learning) and client.wait(analytics)
    with cluster.client("bob") as bob, pytest.raises(Exception, match="does not exist"):
        bob.get_task(learning)

    seen = scrape(coordinator)

    def value(name: str, **labels: str) -> float:
        return seen.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("deltaflow_coordinator_tasks", state="finished") == 2
    assert value("deltaflow_coordinator_tasks", state="running") == 0
    assert value("deltaflow_coordinator_workers_connected") == 3
    assert value("deltaflow_coordinator_round_seconds_count", kind="learning") == 5
    assert value("deltaflow_coordinator_round_seconds_count", kind="analytics") == 1
    assert value("deltaflow_coordinator_round_seconds_sum", kind="learning") > 0
    assert value("deltaflow_coordinator_phase_seconds_count", phase="join") == 2
    assert value("deltaflow_coordinator_worker_drops_total", phase="join") == 1  # w3 refused
    rpcs = "deltaflow_coordinator_rpcs_total"
    assert value(rpcs, method="TaskService/CreateTask", code="OK") == 2
    assert value(rpcs, method="TaskService/GetTask", code="NOT_FOUND") == 1  # bob's look
    assert value(rpcs, method="WorkerService/Register", code="OK") == 3
    assert value("deltaflow_coordinator_rpc_seconds_count", method="TaskService/CreateTask") == 2
    # Bytes both ways: the learning task's weights came up, and went down to the workers.
    assert value("deltaflow_coordinator_received_bytes_total", method="TaskService/CreateTask") > 1000
    assert value("deltaflow_coordinator_sent_bytes_total", method="WorkerService/FetchWeights") > 1000
    assert value("deltaflow_coordinator_received_bytes_total", method="WorkerService/Upload") > 0

    # A call the gate refuses is counted with its code too: a worker may not list tasks.
    with cluster.channel("w1") as channel, pytest.raises(grpc.RpcError):
        services_pb2_grpc.TaskServiceStub(channel).ListTasks(pb.ListTasksRequest(), timeout=10)
    assert scrape(coordinator)[(rpcs, (("code", "PERMISSION_DENIED"),
                                       ("method", "TaskService/ListTasks")))] == 1

    w1 = scrape(metrics_url(cluster.workers["w1"]))
    assert w1[("deltaflow_worker_tasks_total", (("kind", "learning"),))] == 1
    assert w1[("deltaflow_worker_tasks_total", (("kind", "analytics"),))] == 1
    assert w1[("deltaflow_worker_rounds_trained_total", ())] == 5
    assert w1[("deltaflow_worker_steps_computed_total", ())] >= 1
    assert not any(name.startswith("deltaflow_worker_refusals") for name, _ in w1)
    w3 = scrape(metrics_url(cluster.workers["w3"]))
    assert w3[("deltaflow_worker_refusals_total", (("reason", "policy"),))] == 1
    assert not any("rows" in name for name, _ in w3)  # nothing counted from the data
