"""The coordinator's state dir over real coordinators: one owner at a time, no recovery by a
coordinator that cannot serve, a corrupted database refused at the start, results and
checkpoints that are checked against their checksums when read, and a disk that fills up."""

from __future__ import annotations

import errno
import signal
import socket
import sqlite3
import subprocess
import threading

import grpc
import pytest
import torch
from cluster import LocalCluster, log_text, wages, wait_for
from hand_worker import HandWorker
from learning_tasks import Regression
from tasks import WageAvg

from deltaflow.localcluster import Daemon
from sdk import values
from sdk.client import ClientError
from sdk.proto import services_pb2 as pb
from sdk.proto import services_pb2_grpc
from sdk.tensors import iter_chunks
from grpc_health.v1 import health_pb2, health_pb2_grpc

RUNNING, ERROR = pb.TASK_STATE_RUNNING, pb.TASK_STATE_ERROR


def _second_coordinator(cluster: LocalCluster, listen: str) -> Daemon:
    """Another coordinator on the cluster's state dir, run until it exits."""
    daemon = Daemon(["coordinator", "--insecure", "--listen", listen,
                     "--state-dir", str(cluster.root / "state")],
                    cluster.root / f"second-{len(cluster.daemons)}.log")
    cluster.daemons.append(daemon)
    daemon.process.wait(60)
    return daemon


def _stored_state(cluster: LocalCluster, task_id: int) -> tuple[int, int]:
    """The task's state and log length as the database holds them, read with no coordinator."""
    uri = f"file:{cluster.root / 'state' / 'coordinator.sqlite3'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        state = db.execute("SELECT state FROM tasks WHERE id = ?", (task_id,)).fetchone()[0]
        length = db.execute("SELECT COUNT(*) FROM logs WHERE task_id = ?",
                            (task_id,)).fetchone()[0]
    return state, length


def test_one_coordinator_owns_the_state_dir_and_one_that_cannot_listen_recovers_nothing(tmp_path):
    with LocalCluster(tmp_path, secure=False) as cluster:
        cluster.start_coordinator()
        first = cluster.coordinator
        client = cluster.client()
        waiting = client.create_task(WageAvg(connection_timeout=120).build())  # no workers
        wait_for(lambda: client.get_task(waiting).state == RUNNING, what="RUNNING")

        # A task upload in progress: its first chunk is in, the rest is still to come.
        built = WageAvg(connection_timeout=1).build().serialize()
        rest = threading.Event()

        def upload():
            yield pb.CreateTaskRequest(chunk=built[:10])
            rest.wait(60)
            yield pb.CreateTaskRequest(chunk=built[10:])

        with cluster.channel() as channel:
            stub = services_pb2_grpc.TaskServiceStub(channel)
            created = stub.CreateTask.future(upload())
            scratch = cluster.root / "state" / "scratch"
            uploads = wait_for(lambda: list(scratch.iterdir()), what="the upload's scratch file")

            second = _second_coordinator(cluster, "127.0.0.1:0")
            assert second.process.returncode != 0
            assert (f"the state dir {cluster.root / 'state'} is in use by another coordinator "
                    f"(pid {first.process.pid})") in second.log()
            assert "Traceback" not in second.log()

            assert list(scratch.iterdir()) == uploads
            assert client.get_task(waiting).state == RUNNING
            rest.set()
            assert client.wait(created.result(30).task_id) is False  # served: no workers

        # Killed, it leaves the running task behind; one that cannot listen leaves it there.
        first.signal(signal.SIGKILL)
        first.process.wait()
        before = _stored_state(cluster, waiting)
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            refused = _second_coordinator(cluster, f"127.0.0.1:{port}")
        assert refused.process.returncode != 0
        assert f"cannot listen on 127.0.0.1:{port}" in refused.log()
        assert before == _stored_state(cluster, waiting) and before[0] == RUNNING

        cluster.start_coordinator()  # carries the task on, from the start
        client = cluster.client()
        wait_for(lambda: "it runs again from the start" in log_text(client, waiting),
                 what="the task to run again")
        assert client.get_task(waiting).state == RUNNING


def test_a_corrupted_database_stops_the_coordinator_at_start_saying_what_to_do(tmp_path):
    with LocalCluster(tmp_path, secure=False) as cluster:
        cluster.start_coordinator()
        client = cluster.client()
        for _ in range(5):  # pages of tasks and logs
            client.create_task(WageAvg(connection_timeout=0.1).build())
        cluster.coordinator.stop()
        database = cluster.root / "state" / "coordinator.sqlite3"
        pristine = database.read_bytes()
        assert len(pristine) >= 3 * 4096
        for start in (4096, 0):  # a page of a table, then the file's header
            damaged = bytearray(pristine)
            damaged[start:start + 4096] = bytes(range(256)) * 16
            database.write_bytes(bytes(damaged))
            refused = _second_coordinator(cluster, "127.0.0.1:0")
            assert refused.process.returncode != 0
            log = refused.log()
            assert f"the coordinator's database {database} is corrupted" in log
            assert "restore the state dir from a backup, or move the database away" in log
            assert "Traceback" not in log


class _PlainWorker(HandWorker):
    """Joins a plain learning task, and trains by sending back the weights it is given as they
    came (`weights`), for 10 samples; or, with `spoil`, damages the task's checkpoint on disk
    before it downloads it at join, and keeps the answer it gets."""

    def __init__(self, cluster, name: str, weights: bytes, spoil=None) -> None:
        super().__init__(cluster, name, ["train.npz"])
        self.weights, self.spoil = weights, spoil
        self.refusal: grpc.RpcError | None = None
        self.joined = threading.Event()

    def header(self, assignment: pb.Assignment) -> pb.UploadHeader:
        header = super().header(assignment)
        if assignment.phase == "train":
            header.meta.CopyFrom(values.encode({"samples": 10}))
        return header

    def answer(self, assignment: pb.Assignment) -> bytes | None:
        if assignment.phase == "join" and self.spoil is not None:
            self.spoil(assignment.task_id)
            try:
                list(self.stub.FetchWeights(pb.FetchWeightsRequest(
                    session_id=self.session, task_id=assignment.task_id)))
            except grpc.RpcError as error:
                self.refusal = error
            self.joined.set()
            return None
        return b"" if assignment.phase == "join" else self.weights


def _flip(path) -> None:
    """Flips one bit in the middle of the file."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_corrupted_results_and_checkpoints_are_data_loss_never_decoded(tmp_path):
    with LocalCluster(tmp_path, secure=False) as cluster:
        cluster.start_coordinator()
        blobs = cluster.root / "state" / "blobs"
        client = cluster.client()

        # Analytics: a result flipped by one bit, then one cut short.
        for name, rows in (("w1", 20), ("w2", 30)):
            cluster.start_worker(name, {"wages.csv": wages(rows, rows)}, False)
        for name in ("w1", "w2"):
            cluster.wait_connected(name)
        analytics = client.create_task(WageAvg(max_clients=2).build())
        assert client.wait(analytics)
        client.get_result(analytics)
        for damage in (_flip, lambda path: path.write_bytes(path.read_bytes()[:-1])):
            damage(blobs / f"task-{analytics}.result")
            with pytest.raises(ClientError) as raised:
                client.get_result(analytics)
            assert raised.value.code == grpc.StatusCode.DATA_LOSS
            assert str(raised.value).startswith(
                f"DATA_LOSS: the result of task {analytics} is corrupted on disk")

        # Learning: a finished task's result, then a running task's checkpoint.
        built = Regression(max_rounds=1, max_clients=2, validate_frac=0,
                           secure_aggregation=False).build()
        weights = b"".join(bytes(chunk) for chunk in iter_chunks(built.weights))
        plain = [_PlainWorker(cluster, name, weights) for name in ("h1", "h2")]
        for worker in plain:
            worker.start()
            cluster.wait_connected(worker.name)
        learning = client.create_task(built)
        assert client.wait(learning), client.get_task(learning).error
        for name, tensor in client.get_result(learning).items():
            torch.testing.assert_close(tensor, built.weights[name])
        _flip(blobs / f"task-{learning}.result")
        with pytest.raises(ClientError) as raised:
            client.get_result(learning)
        assert raised.value.code == grpc.StatusCode.DATA_LOSS
        assert f"the result of task {learning} is corrupted on disk" in str(raised.value)
        for worker in plain:
            worker.done.set()
        wait_for(lambda: all(f"worker {worker.name} dropped" in cluster.coordinator.log()
                             for worker in plain), what="the plain workers to leave")

        spoiling = threading.Lock()

        def spoil(task_id: int) -> None:
            """Both workers call it at join; one at a time, since one's write truncates the
            file the other would read. The damage is the same, so the second changes nothing."""
            with spoiling:
                path = blobs / f"task-{task_id}.weights"
                data = bytearray(path.read_bytes())
                data[len(data) // 2] = weights[len(weights) // 2] ^ 0xFF
                path.write_bytes(bytes(data))

        spoilers = [_PlainWorker(cluster, name, weights, spoil) for name in ("s1", "s2")]
        for worker in spoilers:
            worker.start()
            cluster.wait_connected(worker.name)
        spoiled = client.create_task(built)
        assert all(worker.joined.wait(30) for worker in spoilers)
        for worker in spoilers:
            assert worker.refusal.code() == grpc.StatusCode.DATA_LOSS
            assert (f"the checkpoint of task {spoiled} is corrupted on disk"
                    in worker.refusal.details())
        client.cancel_task(spoiled)
        assert "Traceback" not in cluster.coordinator.log()
        assert f"task {learning} finished" in log_text(client, learning)


def _fill(path) -> None:
    """Writes `path` until its file system is full."""
    with open(path, "wb", buffering=0) as handle:
        for size in (1 << 16, 512):
            try:
                while True:
                    handle.write(bytes(size))
            except OSError as error:
                assert error.errno == errno.ENOSPC


def test_a_full_disk_fails_the_task_it_hits_leaves_no_half_task_and_health_follows_it(
        tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(state)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"a small tmpfs cannot be mounted here: {mounted.stderr.strip()}")
    filler = state / "filler"
    try:
        with LocalCluster(tmp_path, secure=False) as cluster:
            cluster.start_coordinator()
            client = cluster.client()
            with cluster.channel() as channel:
                health = health_pb2_grpc.HealthStub(channel)

                def status() -> int:
                    return health.Check(health_pb2.HealthCheckRequest(service=""),
                                        timeout=10).status

                assert status() == health_pb2.HealthCheckResponse.SERVING
                built = Regression(max_rounds=1, max_clients=2, validate_frac=0,
                                   secure_aggregation=False).build()
                weights = b"".join(bytes(chunk) for chunk in iter_chunks(built.weights))
                # The disk fills up as the workers train round 1: its checkpoint cannot be kept.
                workers = [_PlainWorker(cluster, name, weights) for name in ("h1", "h2")]
                filled = threading.Event()
                original = workers[0].answer

                def answer(assignment: pb.Assignment) -> bytes | None:
                    if assignment.phase == "train" and not filled.is_set():
                        _fill(filler)
                        filled.set()
                    return original(assignment)

                workers[0].answer = answer
                for worker in workers:
                    worker.start()
                    cluster.wait_connected(worker.name)
                learning = client.create_task(built)
                assert client.wait(learning) is False
                failed = client.get_task(learning)
                assert failed.state == ERROR
                assert "the coordinator could not write" in failed.error
                assert "the disk is full" in failed.error and "free space there" in failed.error
                assert str(state) in failed.error
                wait_for(lambda: status() == health_pb2.HealthCheckResponse.NOT_SERVING,
                         what="NOT_SERVING")

                # A task sent meanwhile is refused, and leaves neither a row nor a file behind.
                known = [task.task_id for task in client.list_tasks()]
                blobs = sorted((state / "blobs").iterdir())
                with pytest.raises(ClientError) as raised:
                    client.create_task(WageAvg().build())
                assert raised.value.code == grpc.StatusCode.UNAVAILABLE
                assert "the disk is full" in str(raised.value)
                assert [task.task_id for task in client.list_tasks()] == known
                assert sorted((state / "blobs").iterdir()) == blobs
                assert not list((state / "scratch").iterdir())
                assert status() == health_pb2.HealthCheckResponse.NOT_SERVING

                # Room again: health serves, the task's end is written, tasks are taken.
                filler.unlink()
                wait_for(lambda: status() == health_pb2.HealthCheckResponse.SERVING,
                         what="SERVING again")
                assert _stored_state(cluster, learning)[0] == ERROR
                again = client.create_task(WageAvg(connection_timeout=0.1).build())
                assert again not in known and client.wait(again) is False
                for worker in workers:
                    worker.done.set()
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)
