"""Federated learning when workers fail: killed, too slow, broken, without rows, leaving mid
upload, or never selected; over real daemons (split from test_learning.py, whose helpers it
uses, so that the two files run side by side)."""

from __future__ import annotations

import contextlib
import signal
import threading

import grpc
import numpy as np
import pytest
import torch
from cluster import log_text, wait_for
from hand_worker import HandWorker
from learning_tasks import BrokenTraining, Regression
from test_learning import STRAGGLING, fedavg_in_process, start

from sdk import values
from sdk.proto import services_pb2 as pb
from sdk.proto import services_pb2_grpc


def test_a_worker_killed_mid_round_is_dropped_and_the_task_finishes(cluster):
    start(cluster, env={"w3": {"TEST_TRAIN_DELAY": "30"}})
    client = cluster.client()
    task_id = client.create_task(Regression(max_rounds=2, wait_timeout=60).build())
    wait_for(lambda: "loaded the task" in log_text(client, task_id), timeout=120,
             what="the join phase")
    wait_for(lambda: "round 1 trained" in cluster.workers["w1"].log(), what="round 1 to run")
    cluster.workers["w3"].signal(signal.SIGKILL)
    assert client.wait(task_id), client.get_task(task_id).error
    log = log_text(client, task_id)
    assert "worker w3 dropped in train" in log
    assert "round 2/2: mse=" in log and "from 2 workers" in log


def test_a_straggler_past_wait_timeout_is_dropped(cluster):
    start(cluster, env={"w2": {"TEST_TRAIN_DELAY": "30"}})
    client = cluster.client()
    task_id = client.create_task(Regression(max_rounds=2, wait_timeout=STRAGGLING).build())
    assert client.wait(task_id), client.get_task(task_id).error
    log = log_text(client, task_id)
    assert f"worker w2 dropped in train: no answer within {STRAGGLING}s" in log
    assert "round 2/2: mse=" in log and "from 2 workers" in log


def test_too_few_workers_left_fails_the_task_naming_who_came(cluster):
    start(cluster, env={"w2": {"TEST_TRAIN_DELAY": "30"}, "w3": {"TEST_TRAIN_DELAY": "30"}})
    client = cluster.client()
    task_id = client.create_task(Regression(max_rounds=1, wait_timeout=STRAGGLING).build())
    assert client.wait(task_id) is False
    error = client.get_task(task_id).error
    assert "1 of the workers remain (w1), fewer than min_clients=2" in error


def test_an_error_in_the_users_train_reaches_the_trace(cluster):
    start(cluster, names=("w1", "w2"))
    client = cluster.client()
    task_id = client.create_task(BrokenTraining(max_rounds=2).build())
    assert client.wait(task_id) is False
    log = log_text(client, task_id)
    assert "ValueError: a bug in the user's train()" in log and "Traceback" in log
    assert "worker w1 dropped in train" in log
    assert "fewer than min_clients=2" in client.get_task(task_id).error


@pytest.mark.parametrize("secure", [True, False])
def test_a_worker_without_training_rows_is_dropped_and_named(cluster, secure):
    start(cluster, names=("w1", "w2"))
    empty = cluster.data_dir("w3") / "train.npz"
    np.savez(empty, x=np.zeros((0, 4), np.float32), y=np.zeros((0, 1), np.float32))
    cluster.start_worker("w3")
    client = cluster.client()
    task_id = client.create_task(
        Regression(max_rounds=1, validate_frac=0, secure_aggregation=secure).build())
    assert client.wait(task_id), client.get_task(task_id).error
    log = log_text(client, task_id)
    assert "worker w3 dropped in train: " in log
    assert "ValueError: it has no training samples: train.npz holds 0 rows" in log


class Quitter(HandWorker):
    """Downloads the task it is selected for, then reports an error as it joins; once the
    coordinator releases it, it asks for the task and its weights again: `refusals`."""

    def __init__(self, cluster) -> None:
        super().__init__(cluster, "quitter", ["train.npz"])
        self.refusals: list[grpc.RpcError] = []
        self.checked = threading.Event()

    def answer(self, assignment: pb.Assignment) -> bytes | None:
        if assignment.phase == "join":
            self.fetch_task(assignment.task_id)  # selected, it may
            self.report_error(assignment, "it would rather not")
        return None

    def released(self, task_id: int) -> None:
        if self.checked.is_set():
            return
        for call, request in ((self.stub.FetchWeights, pb.FetchWeightsRequest),
                              (self.stub.FetchTask, pb.FetchTaskRequest)):
            try:
                list(call(request(session_id=self.session, task_id=task_id)))
            except grpc.RpcError as refused:
                self.refusals.append(refused)
        self.checked.set()


class Holder(HandWorker):
    """Joins, then holds the first training phase open until `quitter` has checked (the task
    still runs meanwhile), and reports an error."""

    def __init__(self, cluster, quitter: Quitter) -> None:
        super().__init__(cluster, "holder", ["train.npz"])
        self.quitter = quitter

    def answer(self, assignment: pb.Assignment) -> bytes | None:
        if assignment.phase == "join":
            return b""
        self.quitter.checked.wait(60)
        self.report_error(assignment, "it held the round long enough")
        return None


def test_only_a_tasks_workers_download_its_code_and_weights(cluster):
    """A registered worker that the task did not select is refused the task and its weights,
    and so is one dropped from it while the task runs, with a message that says why; the task's
    own workers still get both."""
    start(cluster, names=("w1", "w2"))
    quitter = Quitter(cluster)
    hand_workers = (quitter, Holder(cluster, quitter))
    for worker in hand_workers:
        worker.start()
        cluster.wait_connected(worker.name)
    client = cluster.client()
    task_id = client.create_task(Regression(max_rounds=1, min_clients=2, max_clients=4,
                                            secure_aggregation=False).build())
    with cluster.channel("outsider") as channel:
        stub = services_pb2_grpc.WorkerServiceStub(channel)
        outsider = stub.Register(pb.RegisterRequest(name="outsider", datasets=[])).session_id
        for call, request in ((stub.FetchWeights, pb.FetchWeightsRequest),
                              (stub.FetchTask, pb.FetchTaskRequest)):
            with pytest.raises(grpc.RpcError) as refused:
                list(call(request(session_id=outsider, task_id=task_id)))
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert (f"worker outsider is not selected for task {task_id}"
                    in refused.value.details())
    assert client.wait(task_id), client.get_task(task_id).error
    log = log_text(client, task_id)
    assert "selected 4 worker(s): holder, quitter, w1, w2" in log
    assert "worker quitter dropped in join: it reported an error: it would rather not" in log
    assert "worker holder dropped in train" in log
    assert quitter.checked.is_set()
    refusal = (f"worker quitter is not selected for task {task_id} (or was dropped from it): "
               "only its workers download it")
    assert [(r.code(), r.details()) for r in quitter.refusals] == 2 * [
        (grpc.StatusCode.PERMISSION_DENIED, refusal)]


class GhostWorker(HandWorker):
    """It joins (and takes its part in secure aggregation's key exchange), then its upload
    goes wrong halfway: its connection dies ("breaks off"), or it sends a second header."""

    def __init__(self, cluster, fault: str = "breaks off") -> None:
        super().__init__(cluster, "ghost", ["train.npz"])
        self.fault = fault

    def answer(self, assignment: pb.Assignment) -> bytes | None:
        if assignment.phase == "join":
            return b""
        if assignment.phase == "secagg_keys":
            return self.secure.open(assignment,
                                    self.contribution(assignment, f"round {assignment.round}"))
        if assignment.phase != "train":
            return self.secure.answer(assignment)
        header = self.header(assignment)
        secure = assignment.HasField("secagg")
        header.meta.CopyFrom(values.encode({"metric_names": []} if secure else {"samples": 1000}))

        def half_an_upload():
            yield pb.UploadRequest(header=header)
            yield pb.UploadRequest(chunk=b"\x7f" * 64)
            if self.fault == "two headers":
                yield pb.UploadRequest(header=header)
                return
            threading.Timer(0.3, self.channel.close).start()  # the ghost's connection dies
            threading.Event().wait(5)

        with contextlib.suppress(grpc.RpcError, ValueError):
            self.stub.Upload(half_an_upload())
        self.done.set()
        return None


@pytest.mark.parametrize(("secure", "fault"), [(True, "breaks off"), (False, "breaks off"),
                                               (False, "two headers"), ("32-bit", "breaks off")])
def test_a_worker_that_drops_mid_upload_leaves_no_trace_in_the_average(cluster, secure, fault):
    start(cluster, names=("w1", "w2"))
    ghost = GhostWorker(cluster, fault)
    ghost.start()
    cluster.wait_connected("ghost")
    client = cluster.client()
    task = Regression(max_rounds=2, min_clients=2, max_clients=3,
                      secure_aggregation=bool(secure))
    # With an update_bound (each |update| x samples stays below 10 here) w1 and w2 send their
    # updates in 32-bit words.
    task.update_bound = 10.0 if secure == "32-bit" else None
    built = task.build()
    task_id = client.create_task(built)
    assert client.wait(task_id), client.get_task(task_id).error
    assert ghost.done.is_set()
    log = log_text(client, task_id)
    assert "selected 3 worker(s): ghost, w1, w2" in log and "worker ghost dropped in train" in log
    assert ("part of a dropped worker's upload had reached the sum; collecting the uploads of "
            "w1, w2 again without it") in log
    if fault == "two headers":
        assert "its upload was refused: an upload has one header, then chunks" in log
    if secure:  # its masks with w1 and w2 were taken off with the shares of its mask key
        assert "the sum covers 2 of 3 selected workers: w1, w2" in log
    assert ("each worker's update in 32-bit words" in log) == (secure == "32-bit")
    files = [cluster.data_dir(name) / "train.npz" for name in ("w1", "w2")]
    expected, _ = fedavg_in_process(built, task_id, files, rounds=2)
    for name, tensor in client.get_result(task_id).items():
        torch.testing.assert_close(tensor, expected[name], rtol=1e-5, atol=1e-6)

