"""`--metrics-listen`: the coordinator's and the workers' /metrics, scraped over HTTP after real
tasks ran on the shared cluster (`cluster.served_cluster`), and parsed with prometheus_client's
own parser. Other tests may have run tasks there first: counts are checked against what the
coordinator says happened."""

from __future__ import annotations

import re
import urllib.request

import grpc
import pytest
from cluster import wait_for
from prometheus_client.parser import text_string_to_metric_families

from sdk.proto import services_pb2 as pb
from sdk.proto import services_pb2_grpc

Samples = dict[tuple[str, tuple], float]


def scrape(daemon) -> Samples:
    """The samples at the daemon's /metrics, by (name, sorted labels)."""
    url = wait_for(lambda: re.search(r"metrics at (http://\S+)\n", daemon.log()),
                   what="the metrics URL").group(1)
    assert url.startswith("http://127.0.0.1:")  # loopback unless told otherwise
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_coordinator_metrics(served):
    cluster, ids = served
    with cluster.client("root") as root:
        tasks = root.list_tasks(1000)
    before = scrape(cluster.coordinator)
    with cluster.client("bob") as bob, pytest.raises(Exception, match="does not exist"):
        bob.get_task(ids["learning"])
    with cluster.channel("w1") as channel, pytest.raises(grpc.RpcError):  # a worker may not
        services_pb2_grpc.TaskServiceStub(channel).ListTasks(pb.ListTasksRequest(), timeout=10)
    seen = scrape(cluster.coordinator)

    for state in ("pending", "running", "finished", "error", "cancelled"):
        count = sum(pb.TaskState.Name(t.state) == f"TASK_STATE_{state.upper()}" for t in tasks)
        assert value(seen, "deltaflow_coordinator_tasks", state=state) == count, state
    assert value(seen, "deltaflow_coordinator_workers_connected") == 3
    finished = [t for t in tasks if t.state == pb.TASK_STATE_FINISHED]
    analytics = sum(t.kind == 1 for t in finished)  # TASK_KIND_ANALYTICS
    assert value(seen, "deltaflow_coordinator_round_seconds_count", kind="learning") == 5
    assert value(seen, "deltaflow_coordinator_round_seconds_count", kind="analytics") == analytics
    assert value(seen, "deltaflow_coordinator_round_seconds_sum", kind="learning") > 0
    assert value(seen, "deltaflow_coordinator_phase_seconds_count", phase="join") == len(finished)
    assert value(seen, "deltaflow_coordinator_worker_drops_total", phase="join") >= 1  # w3's no

    rpcs = "deltaflow_coordinator_rpcs_total"
    assert value(seen, rpcs, method="TaskService/CreateTask", code="OK") == len(tasks)
    assert value(seen, rpcs, method="WorkerService/Register", code="OK") == 3
    for method, code in (("TaskService/GetTask", "NOT_FOUND"),  # bob's look at alice's task
                         ("TaskService/ListTasks", "PERMISSION_DENIED")):  # refused by the gate
        assert value(seen, rpcs, method=method, code=code) == value(
            before, rpcs, method=method, code=code) + 1, method
    assert value(seen, "deltaflow_coordinator_rpc_seconds_count",
                 method="TaskService/CreateTask") == len(tasks)
    # Bytes both ways: the learning task's weights came up, and went down to its workers.
    assert value(seen, "deltaflow_coordinator_received_bytes_total",
                 method="TaskService/CreateTask") > 1000
    assert value(seen, "deltaflow_coordinator_sent_bytes_total",
                 method="WorkerService/FetchWeights") > 1000
    assert value(seen, "deltaflow_coordinator_received_bytes_total",
                 method="WorkerService/Upload") > 0


def test_worker_metrics(served):
    cluster, _ = served
    w1 = scrape(cluster.workers["w1"])
    assert value(w1, "deltaflow_worker_tasks_total", kind="learning") == 1
    assert value(w1, "deltaflow_worker_tasks_total", kind="analytics") >= 1
    assert value(w1, "deltaflow_worker_rounds_trained_total") == 5
    assert value(w1, "deltaflow_worker_steps_computed_total") >= 1
    assert not any(name == "deltaflow_worker_refusals_total" for name, _ in w1)
    w3 = scrape(cluster.workers["w3"])  # alice may not run analytics there
    assert value(w3, "deltaflow_worker_refusals_total", reason="policy") >= 1
    assert value(scrape(cluster.coordinator), "deltaflow_coordinator_worker_drops_total",
                 phase="join") == value(w3, "deltaflow_worker_refusals_total", reason="policy")
    assert not any("rows" in name for name, _ in w3)  # nothing counted from the data
