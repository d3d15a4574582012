"""`--metrics-listen`: the coordinator's and the workers' /metrics, scraped over HTTP after real
tasks ran on the shared cluster (`cluster.served_cluster`), and parsed with prometheus_client's
own parser. Other tests may have run tasks there first: counts are checked against what the
coordinator says happened."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Callable

import grpc
import pytest
from cluster import wait_for
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sdk.proto import services_pb2 as pb
from sdk.proto import services_pb2_grpc
from worker.engine import EngineSession, FakeInventory, GpuInfo, NvmlInventory
from worker.metrics import EngineCollector

Samples = dict[tuple[str, tuple], float]
GiB = 1024**3


def scrape(daemon) -> Samples:
    """The samples at the daemon's /metrics, by (name, sorted labels)."""
    url = wait_for(lambda: re.search(r"metrics at (http://\S+)\n", daemon.log()),
                   what="the metrics URL").group(1)
    assert url.startswith("http://127.0.0.1:")  # loopback unless told otherwise
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        return parse(response.read().decode())


def parse(text: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def settled(daemon, done: Callable[[Samples], bool], what: str) -> Samples:
    """The daemon's samples once `done` holds for them (what a background task updates)."""
    def attempt() -> Samples | None:
        samples = scrape(daemon)
        return samples if done(samples) else None
    return wait_for(attempt, what=what)


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
    refused = {"method": "TaskService/ListTasks", "code": "PERMISSION_DENIED"}

    def counted():  # a call is counted as its handler ends, just after its caller has the status
        samples = scrape(cluster.coordinator)
        rpcs_total = "deltaflow_coordinator_rpcs_total"
        return samples if value(samples, rpcs_total, **refused) > value(before, rpcs_total,
                                                                          **refused) else None

    seen = wait_for(counted, what="the refused ListTasks to be counted")

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
    # Each task counted once as the coordinator released it, by its worst phase there.
    ended = "deltaflow_worker_tasks_ended_total"
    assert value(w1, ended, outcome="served") >= 2  # the learning task and HOSTILE_NAME's
    settled(cluster.workers["w3"], lambda w3: value(w3, ended, outcome="refused") == value(
        w3, "deltaflow_worker_refusals_total", reason="policy"), "w3's refused tasks released")
    # Its engine: the learning task's one subprocess, closed once the task ended; no GPU here.
    w1 = settled(cluster.workers["w1"], lambda w1: value(
        w1, "deltaflow_worker_engine_tasks_running") == 0, "w1's engine task closed")
    assert value(w1, "deltaflow_worker_engine_tasks_started_total") == 1
    assert value(w1, "deltaflow_worker_engine_tasks_ended_total", outcome="closed") == 1
    assert value(w3, "deltaflow_worker_engine_tasks_started_total") == 0
    gpus = [labels for name, labels in w1 if name == "deltaflow_worker_gpu_memory_total_bytes"]
    assert len(gpus) == len(NvmlInventory().devices())  # none on a machine without a GPU


def test_engine_collector_reads_each_gpu_and_the_sessions_counts(tmp_path):
    gpus = [GpuInfo(0, "A100", free_bytes=30 * GiB, total_bytes=40 * GiB),
            GpuInfo(1, "H100", free_bytes=70 * GiB, total_bytes=80 * GiB)]
    registry = CollectorRegistry()
    registry.register(EngineCollector(EngineSession(tmp_path, inventory=FakeInventory(gpus))))
    samples = parse(generate_latest(registry).decode())
    for gpu in gpus:
        labels = {"device": gpu.device, "model": gpu.name}
        assert value(samples, "deltaflow_worker_gpu_memory_total_bytes",
                     **labels) == gpu.total_bytes
        assert value(samples, "deltaflow_worker_gpu_memory_free_bytes",
                     **labels) == gpu.free_bytes
    assert value(samples, "deltaflow_worker_engine_tasks_started_total") == 0
    assert {dict(labels)["outcome"] for name, labels in samples
            if name == "deltaflow_worker_engine_tasks_ended_total"} == {"closed", "load_failed",
                                                                         "died"}
