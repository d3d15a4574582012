"""Secure aggregation between real daemons: two real workers and a third, speaking the
protocol by hand, that drops out or misbehaves at one phase. The sum stays exact over the
workers whose masked input arrived, and the log names who was dropped and why."""

from __future__ import annotations


import grpc
import pandas as pd
import pytest
from cluster import log_text, wages
from hand_worker import HandWorker
from lying_coordinator import LyingCoordinator, serve
from tasks import WageAvg

from sdk import dataset, values
from sdk.client import ClientError
from sdk.proto import services_pb2 as pb
from sdk.task import BuiltTask, HorizontalAnalytics
from sdk.trust import Kit, sign_task
from worker.analytics import AnalyticsJob
from worker.datasets import DataDir
from worker.sources import Catalog


class Faulty(HandWorker):
    """Computes and masks its parts as a real worker does, until its `fault` at `phase`:
    "silent" (no answer), "bad layout", "bad shares" (ciphertexts that do not decrypt) or
    "short vector"."""

    def __init__(self, cluster, data_dir: DataDir, phase: str, fault: str,
                 stage: int = 0) -> None:
        super().__init__(cluster, "ghost", data_dir.names())
        self.data_dir, self.phase, self.fault, self.stage = data_dir, phase, fault, stage
        self.job: AnalyticsJob | None = None

    def answer(self, assignment: pb.Assignment) -> bytes | None:
        if (assignment.phase, assignment.stage, self.fault) == (self.phase, self.stage, "silent"):
            return None
        if self.job is None:
            spec, _ = self.fetch_task(assignment.task_id)
            self.job = AnalyticsJob(spec, Catalog(self.data_dir), min_rows=1)
        if assignment.phase == "join":
            return b""
        if assignment.phase == "compute":
            step = self.contribution(assignment, f"step {assignment.stage + 1}")
            data = self.secure.open(assignment, step,
                                    self.job.parts(assignment.stage,
                                                   values.decode(assignment.inputs)))
            if self.fault == "bad layout":
                response = pb.SecAggResponse.FromString(data)
                response.layout.CopyFrom(values.encode([1, 2]))
                data = response.SerializeToString()
            return data
        if assignment.phase == "secagg_masked":
            data = self.secure.masked_parts(assignment, self.job.precision, self.job.max_clients)
            return data[:-8] if self.fault == "short vector" else data
        data = self.secure.answer(assignment)
        if assignment.phase == "secagg_share" and self.fault == "bad shares":
            response = pb.SecAggResponse.FromString(data)
            for recipient, ciphertext in response.shares.items():
                response.shares[recipient] = ciphertext[:-1] + bytes([ciphertext[-1] ^ 1])
            data = response.SerializeToString()
        return data


def start(cluster, phase: str, fault: str, stage: int = 0) -> dict[str, pd.DataFrame]:
    """Two real workers and a faulty one; every worker's table."""
    cluster.start_coordinator()
    tables = {"w1": wages(30, 1), "w2": wages(20, 2), "ghost": wages(25, 3)}
    for name in ("w1", "w2"):
        cluster.start_worker(name, {"wages.csv": tables[name]})
    tables["ghost"].to_csv(cluster.data_dir("ghost") / "wages.csv", index=False)
    Faulty(cluster, DataDir(cluster.data_dir("ghost")), phase, fault, stage).start()
    cluster.wait_connected("ghost")
    return tables


# The deadline a silent ghost misses, of its phase's kind (the other kind is 30 s): the real
# workers meet it on a loaded 2-core machine, where their slowest phase took 0.3 s.
SILENT = 3
COMPUTE_PHASES = ("compute", "secagg_masked")  # bounded by wait_timeout, the rest by
                                               # connection_timeout


def deadlines(phase: str, fault: str) -> dict[str, int]:
    """The task's wait_timeout and connection_timeout: SILENT for the kind of phase where the
    ghost is silent, 30 s otherwise."""
    short = "wait_timeout" if phase in COMPUTE_PHASES else "connection_timeout"
    return {"wait_timeout": 30, "connection_timeout": 30,
            **({short: SILENT} if fault == "silent" else {})}


@pytest.mark.parametrize("phase, fault, summed, dropped", [
    ("secagg_share", "silent", 2, f"dropped in secagg_share: no answer within {SILENT}s"),
    ("secagg_check", "silent", 2, f"dropped in secagg_check: no answer within {SILENT}s"),
    ("secagg_masked", "silent", 2, f"dropped in secagg_masked: no answer within {SILENT}s"),
    ("secagg_unmask", "silent", 3, f"dropped in secagg_unmask: no answer within {SILENT}s"),
    ("compute", "bad layout", 2, "dropped in compute: its layout cannot be used: its layout "
                                 "is not one of the parts of reductions"),
    ("secagg_share", "bad shares", 2,
     "dropped in check shares: sent malformed shares to w1, w2"),
    ("secagg_masked", "short vector", 2,
     "dropped in masked input: sent a masked vector of 17 words, expected 18"),
])
def test_a_worker_dropping_or_misbehaving_at_any_phase(cluster, phase, fault, summed, dropped):
    tables = start(cluster, phase, fault)
    client = cluster.client()
    task_id = client.create_task(WageAvg(**deadlines(phase, fault)).build())
    assert client.wait(task_id), client.get_task(task_id).error
    log = log_text(client, task_id)
    assert f"round 1: worker ghost {dropped}" in log
    assert f"step 1/1: aggregated {summed} worker(s)" in log
    included = ["w1", "w2", "ghost"][:summed]
    expected = pd.concat([tables[name] for name in included], ignore_index=True).mean()
    pd.testing.assert_series_equal(client.get_result(task_id), expected, rtol=1e-9)
    # The task's workers are those its result covers: ghost too, when it left after its input
    # was summed (secagg_unmask).
    assert sorted(client.get_task(task_id).workers) == sorted(included)


def test_secure_aggregation_can_be_switched_off_and_the_log_says_so(cluster):
    cluster.start_coordinator()
    tables = {"w1": wages(30, 1), "w2": wages(20, 2)}
    for name, table in tables.items():
        cluster.start_worker(name, {"wages.csv": table})
    client = cluster.client()
    results = {}
    for secure in (True, False):
        task = WageAvg(max_clients=2)
        task.secure_aggregation = secure
        task_id = client.create_task(task.build())
        assert client.wait(task_id), client.get_task(task_id).error
        assert f"secure aggregation: {'on' if secure else 'off'}" in log_text(client, task_id)
        results[secure] = client.get_result(task_id)
    expected = pd.concat(tables.values(), ignore_index=True).mean()
    for result in results.values():
        pd.testing.assert_series_equal(result, expected, rtol=1e-9)


class WageVar(HorizontalAnalytics):
    def __init__(self):
        super().__init__(name="wage_var", min_clients=2, max_clients=3,
                         **deadlines("compute", "silent"))

    def dataset(self):
        return {"wages": dataset.DataFrame("wages.csv")}

    def execute(self, wages):
        return wages.wage.var()  # two steps: the mean, then squared deviations from it


def test_a_worker_dropping_between_steps_fails_the_task_instead_of_a_revealing_rerun(cluster):
    start(cluster, "compute", "silent", stage=1)
    client = cluster.client()
    task_id = client.create_task(WageVar().build())
    assert client.wait(task_id) is False
    error = client.get_task(task_id).error
    assert "worker(s) ghost dropped after step 1" in error and "submit the task again" in error
    log = log_text(client, task_id)
    assert f"round 1: worker ghost dropped in compute: no answer within {SILENT}s" in log


def answer_to_liar(cluster, spec: bytes, phase: str) -> str:
    """The error a real worker answers with to a coordinator that hands it `spec`, signed by
    alice, and asks it for `phase`."""
    liar = LyingCoordinator(spec, sign_task(Kit.load(cluster.kit("alice")), spec), phase,
                            crl=cluster.crl())
    server = serve(liar, cluster)
    try:
        cluster.start_worker("w1", {"wages.csv": wages(10, 1)}, False)
        assert liar.answered.wait(30), "the worker never answered"
    finally:
        server.stop(0)
    return liar.error


def test_a_worker_refuses_to_send_a_secure_tasks_parts_in_the_clear(cluster):
    error = answer_to_liar(cluster, WageAvg().build().serialize(), "compute")
    assert "task 1 asks for secure aggregation, and the coordinator asked for its compute in " \
           "the clear: refused" in error


def test_secagg_plus_and_a_raised_threshold_sum_exactly_over_four_real_workers(cluster):
    """Four real workers. SecAgg+ from three: each masks with k = 2 of the other three (a
    ring), shares with those two only. Then secagg_threshold 0.75: all 4 must unmask, and a
    lying coordinator would need 4 colluders. Both means are pandas' own."""
    cluster.start_coordinator()
    tables = {f"w{i}": wages(10 + 5 * i, i) for i in range(1, 5)}
    for name, table in tables.items():
        cluster.start_worker(name, {"wages.csv": table})
    expected = pd.concat(tables.values(), ignore_index=True).mean()
    plus, raised = WageAvg(max_clients=4), WageAvg(max_clients=4)
    plus.secagg_plus_above = 2
    raised.secagg_threshold = 0.75
    client = cluster.client()
    for task, line in (
            (plus, "round 1: SecAgg+ over 4 workers (more than the task's secagg_plus_above 2): "
                   "each masks with k = 2 neighbours"),
            (raised, "round 1: secure aggregation over 4 workers; threshold t = max(min_clients, "
                     "floor(0.75 x selected) + 1) = 4 of 4 selected (secagg_threshold 0.75): 0 "
                     "may drop out, and a coordinator lying about who dropped needs 2t - n = 4 "
                     "colluding worker(s) to unmask one worker's input")):
        task_id = client.create_task(task.build())
        assert client.wait(task_id), client.get_task(task_id).error
        log = log_text(client, task_id)
        assert line in log
        assert "step 1/1: aggregated 4 worker(s)" in log
        pd.testing.assert_series_equal(client.get_result(task_id), expected, rtol=1e-9)
    below = WageAvg().build().spec
    below.secagg_threshold = 0.3  # built by hand: the coordinator refuses it too
    with pytest.raises(ClientError, match="secagg_threshold is the fraction f") as refused:
        client.create_task(BuiltTask(below))
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_a_worker_refuses_a_signed_task_whose_threshold_is_below_a_majority(cluster):
    """A submitter (with the coordinator) cannot sign away the threshold: at secagg_threshold
    0.3 two disjoint groups of survivors could each rebuild one secret of a worker."""
    spec = WageAvg().build().spec
    spec.secagg_threshold = 0.3
    error = answer_to_liar(cluster, spec.SerializeToString(), "join")
    assert "refused task 1: secagg_threshold is the fraction f" in error
    assert "0.5 <= f < 1" in error and "not 0.3" in error
