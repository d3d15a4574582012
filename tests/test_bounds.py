"""Every resource a caller can make the coordinator hold is bounded: over a real coordinator
whose limits are set small by its flags, each abuse is refused or cut with a sentence that names
the limit and the flag, and leaves nothing behind."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from cluster import LocalCluster, log_text, wait_for
from coordinator.rounds import not_eligible
from coordinator.store import Store
from hand_worker import HandWorker
from sdk.client import ClientError
from sdk.proto import services_pb2 as pb
from sdk.proto import services_pb2_grpc, task_pb2
from sdk.task import BuiltTask
from tasks import WageAvg

STALL = 1.5  # --stream-stall-timeout of the bounded coordinator, seconds
FLAGS = ["--max-task-bytes", "2MiB", "--max-model-bytes", "256KiB", "--max-tasks-per-user", "2",
         "--max-streams-per-user", "3", "--stream-stall-timeout", str(STALL),
         "--max-worker-datasets", "20", "--max-log-line-chars", "2000",
         "--heartbeat-interval", "0.25", "--heartbeat-timeout", "2"]


@pytest.fixture(scope="module")
def bounded(tmp_path_factory) -> Iterator[LocalCluster]:
    """One coordinator with small limits, shared by the tests of this module; each test
    cancels the tasks it created."""
    with LocalCluster(tmp_path_factory.mktemp("bounded")) as cluster:
        cluster.start_coordinator(0, *FLAGS)
        yield cluster


def tasks_stub(cluster: LocalCluster, user: str = "alice") -> services_pb2_grpc.TaskServiceStub:
    return services_pb2_grpc.TaskServiceStub(cluster.channel(user))


def scratch(cluster: LocalCluster) -> list[str]:
    return [path.name for path in (cluster.root / "state" / "scratch").iterdir()]


def task_ids(cluster: LocalCluster) -> list[int]:
    return [task.task_id for task in cluster.client("root").list_tasks(1000)]


def refusal(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        result = call(*args, timeout=30, **kwargs)
        if not hasattr(result, "task_id"):  # a response stream: read it
            list(result)
    return refused.value


def endless(request: pb.CreateTaskRequest) -> Iterator[pb.CreateTaskRequest]:
    while True:
        yield request


def waiting_task(file: str = "nobody-holds-this.csv") -> BuiltTask:
    """A task that waits a minute for workers nobody runs (cancel it)."""
    return WageAvg(connection_timeout=60, file=file).build()


def test_a_task_stream_that_never_ends_is_cut_at_max_task_bytes_and_leaves_nothing(bounded):
    before = task_ids(bounded)
    error = refusal(tasks_stub(bounded).CreateTask, endless(pb.CreateTaskRequest(
        chunk=bytes(64 << 10))))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details() == ("the task is larger than this coordinator's --max-task-bytes "
                               "of 2 MiB")
    empty = refusal(tasks_stub(bounded).CreateTask, iter([pb.CreateTaskRequest()] * 3))
    assert empty.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid built task: a message of the stream is empty" in empty.details()
    assert task_ids(bounded) == before and scratch(bounded) == []


def test_initial_weights_are_bounded_by_max_model_bytes_before_and_while_they_arrive(bounded):
    before = task_ids(bounded)
    manifest = task_pb2.TaskSpec(kind=task_pb2.TASK_KIND_LEARNING, learning=task_pb2.LearningSpec(
        weights=[task_pb2.TensorInfo(name="w", dtype="float32", shape=[1 << 20])]))
    declared = refusal(tasks_stub(bounded).CreateTask, iter([
        pb.CreateTaskRequest(chunk=manifest.SerializeToString()),
        pb.CreateTaskRequest(weights_chunk=bytes(1024))]))
    assert declared.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert declared.details() == ("the initial weights are 4 MiB, over this coordinator's "
                                  "--max-model-bytes of 256 KiB")
    error = refusal(tasks_stub(bounded).CreateTask, endless(pb.CreateTaskRequest(
        weights_chunk=bytes(64 << 10))))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details() == ("the initial weights are larger than this coordinator's "
                               "--max-model-bytes of 256 KiB")
    assert task_ids(bounded) == before and scratch(bounded) == []


def test_a_half_received_task_leaves_no_row_and_no_scratch_file(bounded):
    """Whether its sender goes away or stalls past --stream-stall-timeout."""
    before = task_ids(bounded)
    release = threading.Event()

    def stalling() -> Iterator[pb.CreateTaskRequest]:
        yield pb.CreateTaskRequest(weights_chunk=bytes(1024))
        release.wait(30)

    try:
        gone = tasks_stub(bounded).CreateTask.future(stalling(), timeout=30)
        wait_for(lambda: scratch(bounded), what="the upload to reach the scratch dir")
        gone.cancel()
        wait_for(lambda: not scratch(bounded), what="the cancelled upload's file to go")

        started = time.monotonic()
        stalled = refusal(tasks_stub(bounded).CreateTask, stalling())
        assert time.monotonic() - started < STALL + 10
    finally:
        release.set()
    assert stalled.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stalled.details() == (
        "CreateTask closed: the stream's peer sent nothing within this coordinator's "
        f"--stream-stall-timeout of {STALL:g} s; call again to go on")
    assert task_ids(bounded) == before and scratch(bounded) == []


def test_tasks_pending_or_running_are_bounded_per_user(bounded):
    alice, bob = bounded.client("alice"), bounded.client("bob")
    created = [(alice, alice.create_task(waiting_task())) for _ in range(2)]
    try:
        with pytest.raises(ClientError) as refused:
            alice.create_task(waiting_task())
        assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert ("alice already has 2 tasks pending, running or being created, the most allowed "
                "by this coordinator's --max-tasks-per-user of 2; wait for one to end, or "
                "cancel one") in str(refused.value)
        created.append((bob, bob.create_task(waiting_task())))  # another user's own count
        alice.cancel_task(created.pop(0)[1])
        created.append((alice, alice.create_task(waiting_task())))
    finally:
        for client, task_id in created:
            client.cancel_task(task_id)


def test_open_streams_are_bounded_per_user(bounded):
    alice = bounded.client("alice")
    task_id = alice.create_task(waiting_task())
    follow = pb.StreamLogsRequest(task_id=task_id, follow=True)
    stub = tasks_stub(bounded)
    streams = [stub.StreamLogs(follow) for _ in range(3)]
    try:
        for stream in streams:
            next(stream)  # open: it gave the first entry and waits for more
        error = refusal(stub.StreamLogs, follow)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error.details().startswith("alice already has 3 streams open")
        assert ("the most allowed by this coordinator's --max-streams-per-user of 3; close one "
                "first") in error.details()
        other = tasks_stub(bounded, "root").StreamLogs(follow)  # another user's own count
        assert next(other).offset == 0
        other.cancel()
        streams.pop().cancel()
        reopened = wait_for(lambda: _open_stream(stub, follow), what="a stream to be free")
        streams.append(reopened)
    finally:
        for stream in streams:
            stream.cancel()
        alice.cancel_task(task_id)


def _open_stream(stub: services_pb2_grpc.TaskServiceStub, request: pb.StreamLogsRequest):
    stream = stub.StreamLogs(request)
    try:
        next(stream)
    except grpc.RpcError:
        return None
    return stream


def test_registrations_are_bounded_and_one_that_never_connects_is_forgotten(bounded):
    stub = services_pb2_grpc.WorkerServiceStub(bounded.channel("w-reg"))
    many = refusal(stub.Register, pb.RegisterRequest(
        name="w-reg", datasets=[f"d{i}.csv" for i in range(21)]))
    assert many.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert many.details() == ("worker w-reg offers 21 datasets, over this coordinator's "
                              "--max-worker-datasets of 20")
    huge = refusal(stub.Register, pb.RegisterRequest(name="w-reg", datasets=["a" * (7 << 20)]))
    assert huge.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "worker w-reg offers what is not a dataset name: a dataset name is printable text " \
           "of at most 255 bytes" in huge.details() and len(huge.details()) < 300

    session = stub.Register(pb.RegisterRequest(name="w-reg", datasets=["wages.csv"]),
                            timeout=30).session_id
    listed = pb.WorkerMessage(datasets=pb.DatasetList(names=[f"d{i}.csv" for i in range(21)]))
    list(stub.Connect(iter([pb.WorkerMessage(session_id=session), listed]), timeout=30))
    wait_for(lambda: "worker w-reg dropped: worker w-reg offers 21 datasets, over this "
             "coordinator's --max-worker-datasets of 20" in bounded.coordinator.log(),
             what="a connected worker's long list to be refused")

    session = stub.Register(pb.RegisterRequest(name="w-reg", datasets=["wages.csv"]),
                            timeout=30).session_id
    coordinator = bounded.coordinator
    wait_for(lambda: "worker w-reg registered but did not connect within 2 s; forgotten"
             in coordinator.log(), timeout=10, what="the registration to be forgotten")
    late = refusal(stub.Connect, iter([pb.WorkerMessage(session_id=session)]))
    assert late.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_a_live_channel_that_never_names_its_session_is_closed_at_the_heartbeat_timeout(bounded):
    # The live channel is not bounded by the stall timeout (heartbeats may be slower than it):
    # before its first message names a session, the heartbeat timeout bounds it.
    stub = services_pb2_grpc.WorkerServiceStub(bounded.channel("w-mute"))
    stub.Register(pb.RegisterRequest(name="w-mute", datasets=["wages.csv"]), timeout=30)
    hold = threading.Event()

    def mute() -> Iterator[pb.WorkerMessage]:
        hold.wait()  # sends nothing, until the test is over
        yield from ()

    silent = refusal(stub.Connect, mute())
    hold.set()
    assert silent.code() == grpc.StatusCode.FAILED_PRECONDITION, silent.details()


class ReportsALongError(HandWorker):
    """Answers its first assignment with an error far longer than a log line may be."""

    def answer(self, assignment: pb.Assignment) -> None:
        header = self.header(assignment)
        header.error = "e" * 9000
        self.stub.Upload(iter([pb.UploadRequest(header=header)]))
        self.done.set()


def test_one_line_names_the_workers_not_eligible_and_a_long_line_is_cut(bounded):
    lacking = [HandWorker(bounded, f"lack{i}", ["other.csv"]) for i in range(7)]
    failing = [ReportsALongError(bounded, f"long{i}", ["summary.csv"]) for i in range(2)]
    workers = [*lacking, *failing]
    for worker in workers:
        worker.start()
    admin = bounded.client("root")
    try:
        wait_for(lambda: len(admin.list_workers()) == len(workers), what="the workers")
        alice = bounded.client("alice")
        task_id = alice.create_task(WageAvg(connection_timeout=5, file="summary.csv").build())
        assert not alice.wait(task_id)
        log = log_text(alice, task_id)
    finally:
        for worker in workers:
            worker.done.set()
    lines = [line for line in log.splitlines() if "not eligible" in line]
    assert lines == ["not eligible: 7 workers lack summary.csv: lack0, lack1, lack2, lack3, "
                     "lack4 and 2 more workers"]
    cut = [line for line in log.splitlines() if "it reported an error" in line]
    assert len(cut) == 2
    for line in cut:
        assert line.endswith("more characters cut: over this coordinator's "
                             "--max-log-line-chars of 2,000]")
        assert len(line) < 2100


def test_the_not_eligible_line_groups_workers_by_what_they_lack_and_caps_every_list():
    lacking = {f"w{i}": ("wages.csv",) for i in range(12)}
    lacking |= {f"v{i}": tuple(f"f{j}.csv" for j in range(8)) for i in range(2)}
    lacking |= {f"u{i}": (f"g{i}.csv",) for i in range(6)}
    assert not_eligible(lacking) == (
        "not eligible: 12 workers lack wages.csv: w0, w1, w10, w11, w2 and 7 more workers; "
        "2 workers lack f0.csv, f1.csv, f2.csv, f3.csv, f4.csv and 3 more files: v0, v1; "
        "1 worker lacks g0.csv: u0; 1 worker lacks g1.csv: u1; 1 worker lacks g2.csv: u2; "
        "3 more lack other files")


def test_list_tasks_pages_by_size_as_well_as_count(bounded):
    """Tasks whose dataset lists near the 1 MiB a task may use: 20 of them are more than a
    message may carry, and every one is still listed."""
    alice = bounded.client("alice")
    spec = waiting_task().spec
    for index in range(3600):
        spec.datasets.add(argument=f"a{index}", file=f"{'f' * 240}{index:05d}.csv")
    created = []
    for _ in range(20):
        created.append(alice.create_task(BuiltTask(spec)))
        alice.cancel_task(created[-1])
    listed = [task.task_id for task in alice.list_tasks(1000)]
    assert listed[:20] == created[::-1]
    page = tasks_stub(bounded).ListTasks(pb.ListTasksRequest(limit=1000), timeout=30)
    assert 0 < len(page.tasks) < 20 and page.ByteSize() <= 5 << 20

    for index in range(3600, 4100):
        spec.datasets.add(argument=f"a{index}", file=f"{'f' * 240}{index:05d}.csv")
    with pytest.raises(ClientError) as refused:
        alice.create_task(BuiltTask(spec))
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert ("its name and dataset references take 1.01 MiB, more than the 1 MiB a task may use "
            "for them: name fewer datasets") in str(refused.value)


def test_a_follower_that_falls_behind_is_cut_and_trace_resumes_with_every_line_once(cluster):
    """A task whose log is far more than the transport buffers; the coordinator closes a
    follower that takes nothing for --stream-stall-timeout, and `follow` goes on from where it
    got to."""
    state = cluster.root / "state"
    state.mkdir()
    store = Store(state)
    task_id = store.create_task(waiting_task().spec, waiting_task().serialize(), "alice")
    lines = [f"line {index} " + "x" * (16 << 10) for index in range(1000)]
    for line in lines:
        store.append_log(task_id, line)
    store.set_state(task_id, pb.TASK_STATE_FINISHED)
    store.close()
    cluster.start_coordinator(0, "--stream-stall-timeout", "1")
    alice = cluster.client("alice")

    idle = tasks_stub(cluster).StreamLogs(pb.StreamLogsRequest(task_id=task_id), timeout=60)
    next(idle)
    time.sleep(3)  # takes nothing while the coordinator has more to send
    with pytest.raises(grpc.RpcError) as cut:
        for _ in idle:
            pass
    assert cut.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--stream-stall-timeout of 1 s" in cut.value.details()

    seen: list[pb.LogEntry] = []

    def slow(entry: pb.LogEntry) -> None:
        if not seen:
            time.sleep(3)  # falls behind once, then keeps up
        seen.append(entry)

    assert alice.follow(task_id, slow)
    assert [entry.offset for entry in seen] == list(range(len(lines)))
    assert [entry.message for entry in seen] == lines
    assert cluster.coordinator.log().count("closed a StreamLogs stream of alice") >= 2
