"""Bad input answers a status a client can act on, never UNKNOWN: raw bytes that are no
protobuf message, and numbers past what the coordinator's ids and offsets can be, sent over real
channels of a real coordinator (mutual TLS, as a user and as a worker)."""

from __future__ import annotations

import grpc
from tasks import WageAvg

from sdk.proto import services_pb2 as pb
from sdk.proto import services_pb2_grpc

JUNK = b"\xff\xff\xff\xff"  # a field number 0 varint that never ends: no message decodes it
TASKS = "/deltaflow.v1.TaskService/"
WORKERS = "/deltaflow.v1.WorkerService/"
TOO_BIG = 2**64 - 1


def _status(call) -> tuple[grpc.StatusCode, str]:
    try:
        result = call()
        if hasattr(result, "__iter__"):
            list(result)
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def _raw(channel: grpc.Channel, method: str, kind: str, messages: list[bytes]):
    """A call of `method` with these wire bytes as its request(s), through grpc's generic
    calls (no serializer: the bytes go as they are)."""
    multicallable = getattr(channel, kind)(method)
    if kind.startswith("stream"):
        return lambda: multicallable(iter(messages), timeout=10)
    return lambda: multicallable(messages[0], timeout=10)


def test_undecodable_requests_are_invalid_argument_for_every_method(cluster):
    cluster.start_coordinator()
    with cluster.channel("root") as user, cluster.channel("w1") as worker:
        session = services_pb2_grpc.WorkerServiceStub(worker).Register(
            pb.RegisterRequest(name="w1", datasets=["wages.csv"])).session_id
        opening = pb.WorkerMessage(session_id=session).SerializeToString()
        calls = {
            **{name: _raw(user, TASKS + name, "unary_unary", [JUNK]) for name in (
                "GetTask", "ListTasks", "CancelTask", "GetMetrics", "ListAudit",
                "ListWorkers")},
            **{name: _raw(user, TASKS + name, "unary_stream", [JUNK])
               for name in ("StreamLogs", "GetResult")},
            "CreateTask": _raw(user, TASKS + "CreateTask", "stream_unary", [JUNK]),
            "CreateTask, a later chunk": _raw(
                user, TASKS + "CreateTask", "stream_unary",
                [pb.CreateTaskRequest(chunk=b"x").SerializeToString(), JUNK]),
            "Register": _raw(worker, WORKERS + "Register", "unary_unary", [JUNK]),
            **{name: _raw(worker, WORKERS + name, "unary_stream", [JUNK])
               for name in ("FetchTask", "FetchWeights")},
            "Upload": _raw(worker, WORKERS + "Upload", "stream_unary", [JUNK]),
            "Connect": _raw(worker, WORKERS + "Connect", "stream_stream", [JUNK]),
            "Connect, after its opening": _raw(worker, WORKERS + "Connect", "stream_stream",
                                               [opening, JUNK]),
        }
        for name, call in calls.items():
            code, details = _status(call)
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (name, code, details)
            assert "the request is not a valid message of this method" in details, name
            assert "Wire format was corrupt" in details, name
        assert list(services_pb2_grpc.TaskServiceStub(user).ListTasks(
            pb.ListTasksRequest()).tasks) == []  # it serves on
    cluster.stop()
    log = cluster.coordinator.log()
    assert "worker w1 dropped: it sent a message that is not valid" in log
    assert "Traceback" not in log and "Unexpected" not in log


def test_numbers_past_the_largest_id_are_out_of_range_for_every_method(cluster):
    cluster.start_coordinator()
    client = cluster.client()
    task_id = client.create_task(WageAvg(connection_timeout=0.2).build())
    assert not client.wait(task_id)
    with cluster.channel("root") as admin, cluster.channel("w1") as worker:
        tasks = services_pb2_grpc.TaskServiceStub(admin)
        workers = services_pb2_grpc.WorkerServiceStub(worker)
        calls = {
            "GetTask": lambda: tasks.GetTask(pb.GetTaskRequest(task_id=TOO_BIG)),
            "ListTasks": lambda: tasks.ListTasks(pb.ListTasksRequest(before_task_id=TOO_BIG)),
            "ListAudit": lambda: tasks.ListAudit(pb.ListAuditRequest(before_id=TOO_BIG)),
            "StreamLogs": lambda: tasks.StreamLogs(pb.StreamLogsRequest(
                task_id=task_id, offset=TOO_BIG)),
            "StreamLogs, following": lambda: tasks.StreamLogs(pb.StreamLogsRequest(
                task_id=task_id, offset=2**63, follow=True)),
            "GetResult": lambda: tasks.GetResult(pb.GetResultRequest(task_id=TOO_BIG)),
            "CancelTask": lambda: tasks.CancelTask(pb.CancelTaskRequest(task_id=TOO_BIG)),
            "GetMetrics": lambda: tasks.GetMetrics(pb.GetMetricsRequest(task_id=TOO_BIG)),
            "Register": lambda: workers.Register(pb.RegisterRequest(
                name="w1", held_tasks=[1, TOO_BIG])),
            "FetchWeights": lambda: workers.FetchWeights(pb.FetchWeightsRequest(
                session_id="s", task_id=TOO_BIG)),
            "Upload": lambda: workers.Upload(iter([pb.UploadRequest(header=pb.UploadHeader(
                session_id="s", exchange_id=TOO_BIG))])),
        }
        for name, call in calls.items():
            code, details = _status(call)
            assert code == grpc.StatusCode.OUT_OF_RANGE, (name, code, details)
            assert "is out of range: ids and offsets are at most 9223372036854775807" in details
        code, details = _status(lambda: tasks.GetTask(pb.GetTaskRequest(task_id=2**63 - 1)))
        assert (code, details) == (grpc.StatusCode.NOT_FOUND,
                                   "task 9223372036854775807 does not exist")
    assert "OverflowError" not in cluster.coordinator.log()


def test_task_numbers_that_no_worker_can_use_are_invalid_argument(cluster):
    """Refused when the task is created, not found out by every worker's failure."""
    cluster.start_coordinator()
    precision, crowd = WageAvg().build().spec, WageAvg().build().spec
    precision.precision = 2**32 - 1
    crowd.rules.max_clients = 2**32 - 1
    refusals = {
        "precision is the decimal digits kept, an integer from 0 to 15, not 4294967295":
            precision,
        "secure analytics supports fewer than 1048576 workers": crowd,
    }
    with cluster.channel("alice") as channel:
        stub = services_pb2_grpc.TaskServiceStub(channel)
        for refusal, spec in refusals.items():
            code, details = _status(lambda spec=spec: stub.CreateTask(iter([
                pb.CreateTaskRequest(chunk=spec.SerializeToString())])))
            assert code == grpc.StatusCode.INVALID_ARGUMENT, details
            assert refusal in details
