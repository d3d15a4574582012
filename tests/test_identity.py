"""Identities over real daemons: who may call what, tasks only their owners see, workers that
are their certificates, revocation, the audit log, and mutual TLS refusing everyone else."""

from __future__ import annotations

import re
import time

import grpc
import pytest
from cluster import wages, wait_for
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tasks import WageAvg

from deltaflow.localcluster import Daemon
from sdk.client import Client, ClientError
from sdk.proto import services_pb2 as pb
from sdk.proto import services_pb2_grpc
from sdk.trust import Kit, sign_task
from sdk.trust.provision import create_federation, revoke

DENIED = grpc.StatusCode.PERMISSION_DENIED


def _code(call) -> tuple[grpc.StatusCode, str]:
    try:
        result = call()
        if hasattr(result, "__iter__") and not isinstance(result, bytes):
            list(result)
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def _calls(channel: grpc.Channel, name: str) -> dict[str, object]:
    """One call of every method the port serves, as `name` would make it."""
    tasks = services_pb2_grpc.TaskServiceStub(channel)
    workers = services_pb2_grpc.WorkerServiceStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    return {
        "CreateTask": lambda: tasks.CreateTask(iter([pb.CreateTaskRequest(chunk=b"")])),
        "GetTask": lambda: tasks.GetTask(pb.GetTaskRequest(task_id=1)),
        "ListTasks": lambda: tasks.ListTasks(pb.ListTasksRequest()),
        "StreamLogs": lambda: tasks.StreamLogs(pb.StreamLogsRequest(task_id=1)),
        "GetResult": lambda: tasks.GetResult(pb.GetResultRequest(task_id=1)),
        "CancelTask": lambda: tasks.CancelTask(pb.CancelTaskRequest(task_id=1)),
        "GetMetrics": lambda: tasks.GetMetrics(pb.GetMetricsRequest(task_id=1)),
        "ListAudit": lambda: tasks.ListAudit(pb.ListAuditRequest()),
        "Register": lambda: workers.Register(pb.RegisterRequest(name=name)),
        "Connect": lambda: workers.Connect(iter([pb.WorkerMessage(session_id="none")])),
        "FetchTask": lambda: workers.FetchTask(pb.FetchTaskRequest(session_id="none")),
        "FetchWeights": lambda: workers.FetchWeights(pb.FetchWeightsRequest(session_id="none")),
        "Upload": lambda: workers.Upload(iter([pb.UploadRequest(
            header=pb.UploadHeader(session_id="none"))])),
        "Health": lambda: health.Check(health_pb2.HealthCheckRequest()),
    }


USER_METHODS = {"CreateTask", "GetTask", "ListTasks", "StreamLogs", "GetResult", "CancelTask",
                "GetMetrics"}
WORKER_METHODS = {"Register", "Connect", "FetchTask", "FetchWeights", "Upload"}
ALLOWED = {
    "alice": USER_METHODS | {"Health"},                     # an analyst
    "root": USER_METHODS | {"ListAudit", "Health"},         # an admin
    "wx": WORKER_METHODS | {"Health"},                      # a worker
    "coordinator": {"Health"},                              # the coordinator's own kit
}


def test_every_role_may_call_only_its_own_methods(cluster):
    cluster.start_coordinator()
    for name, allowed in ALLOWED.items():
        kit = cluster.federation / "coordinator" if name == "coordinator" else cluster.kit(name)
        credentials = Kit.load(kit).channel_credentials()
        with grpc.secure_channel(cluster.address, credentials) as channel:
            for method, call in _calls(channel, name).items():
                code, details = _code(call)
                gate = code == DENIED and "may not call" in details
                assert gate == (method not in allowed), (name, method, code, details)
                if gate:
                    needed = {"ListAudit": "an admin"}.get(
                        method, "a worker" if method in WORKER_METHODS else "a user")
                    assert f"may not call {method}: only {needed}" in details


def test_a_revoked_certificate_may_call_nothing(cluster):
    cluster.start_coordinator()
    cluster.kit("wx")  # a worker's kit, made on first use
    revoke(cluster.federation / "ca", "bob")
    revoke(cluster.federation / "ca", "wx")
    wait_for(lambda: "revocation list reloaded" in cluster.coordinator.log(),
             what="the coordinator to reload its revocation list")
    for name in ("bob", "wx"):
        with cluster.channel(name) as channel:
            for method, call in _calls(channel, name).items():
                code, details = _code(call)
                assert code == grpc.StatusCode.UNAUTHENTICATED, (name, method, code)
                assert details == f"the certificate of {name} was revoked"


def test_no_certificate_another_ca_and_plaintext_get_nothing(cluster, tmp_path):
    cluster.start_coordinator()
    create_federation(tmp_path / "other", ["127.0.0.1:6700"], [], [("alice", "admin")])
    ca = Kit.load(cluster.kit("alice")).ca_pem
    channels = {
        "another CA's certificate": grpc.secure_channel(
            cluster.address, Kit.load(tmp_path / "other/users/alice").channel_credentials()),
        "no certificate": grpc.secure_channel(
            cluster.address, grpc.ssl_channel_credentials(root_certificates=ca)),
        "plaintext": grpc.insecure_channel(cluster.address),
    }
    for what, channel in channels.items():
        with channel:
            for method, call in _calls(channel, "alice").items():
                code, _ = _code(call)
                assert code == grpc.StatusCode.UNAVAILABLE, (what, method, code)
    with pytest.raises(ClientError, match="it speaks TLS only: use a user kit"):
        Client(cluster.address, timeout=5).list_tasks()


def test_an_analyst_sees_only_their_own_tasks_and_an_admin_sees_all(cluster):
    cluster.start_coordinator()
    for name in ("w1", "w2"):
        cluster.start_worker(name, {"wages.csv": wages(10, len(name))})
    alice, bob, root = (cluster.client(user) for user in ("alice", "bob", "root"))
    task_id = alice.create_task(WageAvg().build())
    assert alice.wait(task_id)
    missing = task_id + 1000
    for call in (bob.get_task, bob.logs, bob.get_result, bob.get_metrics, bob.cancel_task):
        for asked in (task_id, missing):
            with pytest.raises(ClientError) as refused:
                call(asked)
            assert refused.value.code == grpc.StatusCode.NOT_FOUND
            assert str(refused.value) == f"NOT_FOUND: task {asked} does not exist"
    assert bob.list_tasks() == []
    assert [t.task_id for t in alice.list_tasks()] == [task_id]
    assert [(t.task_id, t.owner) for t in root.list_tasks()] == [(task_id, "alice")]
    assert root.get_result(task_id).equals(alice.get_result(task_id))
    second = bob.create_task(WageAvg(min_clients=3, connection_timeout=30).build())
    assert root.cancel_task(second).state == pb.TASK_STATE_CANCELLED
    assert "cancelled by root" in root.get_task(second).error
    assert [t.task_id for t in bob.list_tasks()] == [second]


def test_a_worker_registers_only_as_its_certificate_says(cluster):
    cluster.start_coordinator()
    with cluster.channel("w1") as channel:
        stub = services_pb2_grpc.WorkerServiceStub(channel)
        code, details = _code(lambda: stub.Register(pb.RegisterRequest(name="hospital-a")))
        assert code == DENIED
        assert details == "worker w1 may register only as w1, not as hospital-a"
    with cluster.channel("alice") as channel:
        stub = services_pb2_grpc.WorkerServiceStub(channel)
        code, details = _code(lambda: stub.Register(pb.RegisterRequest(name="alice")))
        assert code == DENIED and "only a worker may" in details


def test_a_registration_cannot_flood_or_forge_the_audit_log(cluster):
    cluster.start_coordinator()
    with cluster.channel("w1") as channel:
        stub = services_pb2_grpc.WorkerServiceStub(channel)
        for name in ("w" * 1_000_000, "w1\r\n2026-01-01 root admin cancel_task task 1 ok"):
            code, details = _code(lambda: stub.Register(pb.RegisterRequest(name=name)))
            assert code == DENIED and len(details) < 300, details
    entries = [e for e in cluster.client("root").list_audit() if e.action == "register"]
    assert len(entries) == 2
    assert all(len(e.target) < 300 and len(e.detail) < 300 for e in entries)
    assert "\n" not in entries[0].target and "\\r\\n" in entries[0].target


def test_a_second_daemon_with_the_same_identity_is_refused_and_does_not_flap(cluster):
    cluster.start_coordinator()
    first = cluster.start_worker("w1", {"wages.csv": wages(10, 1)})
    other = cluster.data_dir("w1-copy")
    second = Daemon(["worker", "--kit", str(cluster.kit("w1")), "--coordinator", cluster.address,
                     "--policy", str(cluster.root / "policies" / "w1.toml"),
                     "--data-dir", str(other), "--work-dir", str(cluster.root / "work-copy")],
                    cluster.root / "worker-copy.log")
    cluster.daemons.append(second)
    root = cluster.client("root")

    def refusals():
        return [e for e in root.list_audit()
                if e.action == "register" and e.outcome == "ALREADY_EXISTS"]

    wait_for(lambda: len(refusals()) >= 2, timeout=60, what="the second daemon to retry")
    log = cluster.coordinator.log()
    assert log.count("worker w1 connected") == 1, log
    assert "dropped" not in log
    assert "registered with" not in second.log()
    first.stop()
    wait_for(lambda: cluster.coordinator.log().count("worker w1 connected") == 2,
             what="the second daemon to take over once the first is gone")
    refused = refusals()
    assert refused[0].caller == "w1" and refused[0].target == "worker w1"


def test_revoking_a_user_ends_their_calls_and_a_worker_its_session(cluster):
    cluster.start_coordinator()
    cluster.start_worker("w1", {"wages.csv": wages(10, 1)})
    bob = cluster.client("bob")
    task_id = bob.create_task(WageAvg(min_clients=3, connection_timeout=60).build())
    following = bob._tasks.StreamLogs(pb.StreamLogsRequest(task_id=task_id, follow=True))
    next(following)  # the stream is live
    revoke(cluster.federation / "ca", "bob")
    revoke(cluster.federation / "ca", "w1")
    with pytest.raises(grpc.RpcError) as ended:
        list(following)
    assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert ended.value.details() == "the certificate of bob was revoked"
    wait_for(lambda: "worker w1 dropped" in cluster.coordinator.log(),
             what="the revoked worker's session to end")
    with pytest.raises(ClientError) as refused:
        bob.list_tasks()
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "the certificate of bob was revoked" in str(refused.value)
    time.sleep(3)  # the revoked worker keeps trying, and is refused each time
    assert cluster.coordinator.log().count("worker w1 connected") == 1


def test_the_audit_log_records_who_did_what_for_admins_only(cluster):
    cluster.start_coordinator()
    for name in ("w1", "w2"):
        cluster.start_worker(name, {"wages.csv": wages(10, len(name))})
    alice, root = cluster.client("alice"), cluster.client("root")
    task_id = alice.create_task(WageAvg().build())
    assert alice.wait(task_id)
    alice.get_result(task_id)
    with pytest.raises(ClientError, match="PERMISSION_DENIED: alice .analyst. may not call "
                                          "ListAudit: only an admin may"):
        alice.list_audit()
    with pytest.raises(ClientError, match="NOT_FOUND"):
        cluster.client("bob").get_result(task_id)
    entries = root.list_audit()
    assert [e.id for e in entries] == sorted((e.id for e in entries), reverse=True)
    seen = {(e.caller, e.action, e.target, e.outcome) for e in entries}
    assert {("alice", "create_task", f"task {task_id}", "ok"),
            ("alice", "get_result", f"task {task_id}", "ok"),
            ("w1", "register", "worker w1", "ok"), ("w2", "register", "worker w2", "ok"),
            ("alice", "ListAudit", "", "PERMISSION_DENIED"),
            ("bob", "get_result", f"task {task_id}", "NOT_FOUND")} <= seen
    assert all(e.time > 0 and e.role for e in entries)
    older = root.list_audit(limit=2, before_id=entries[1].id)
    assert [e.id for e in older] == [e.id for e in entries[2:4]]


def test_the_coordinator_refuses_a_task_not_signed_by_its_caller(cluster):
    cluster.start_coordinator()
    alice, bob = cluster.client("alice"), cluster.client("bob")
    built = WageAvg().build()
    with cluster.channel("alice") as channel:
        stub = services_pb2_grpc.TaskServiceStub(channel)
        spec = built.serialize()
        unsigned = pb.CreateTaskRequest(chunk=spec)
        code, details = _code(lambda: stub.CreateTask(iter([unsigned])))
        assert code == DENIED and "the task is not signed" in details
        signed_by_bob = pb.CreateTaskRequest(chunk=spec)
        signed_by_bob.signature.CopyFrom(sign_task(bob.kit, spec))
        code, details = _code(lambda: stub.CreateTask(iter([signed_by_bob])))
        assert code == DENIED and "signed by bob, not by the caller alice" in details
        altered = pb.CreateTaskRequest(chunk=spec + b"\x10\x01")
        altered.signature.CopyFrom(sign_task(alice.kit, spec))
        code, details = _code(lambda: stub.CreateTask(iter([altered])))
        assert code == DENIED and "not the one alice signed: its bytes differ" in details
    assert alice.list_tasks() == []


def test_daemons_without_a_kit_need_insecure_on_loopback(tmp_path):
    for args, message in (
        (["coordinator"], "give --kit DIR"),
        (["coordinator", "--insecure", "--listen", "0.0.0.0:0"], "loopback only"),
        (["worker", "--data-dir", str(tmp_path)], "give --kit DIR"),
        (["worker", "--insecure", "--name", "w", "--coordinator", "10.1.2.3:6700",
          "--data-dir", str(tmp_path)], "loopback coordinator only"),
    ):
        daemon = Daemon(args, tmp_path / "daemon.log")
        assert daemon.process.wait(30) != 0
        daemon.stop()
        text = daemon.log()
        assert message in text and "Traceback" not in text, text
        (tmp_path / "daemon.log").unlink()


def test_an_insecure_cluster_still_runs_for_loopback_development(tmp_path):
    from deltaflow.localcluster import LocalCluster

    with LocalCluster(tmp_path, secure=False) as cluster:
        cluster.start_coordinator()
        for name in ("w1", "w2"):
            cluster.start_worker(name, {"wages.csv": wages(10, len(name))})
        client = cluster.client()
        task_id = client.create_task(WageAvg().build())
        assert client.wait(task_id), client.get_task(task_id).error
        assert client.get_task(task_id).owner == "anonymous"
        assert re.search(r"created by anonymous \(unsigned\)", client.logs(task_id)[0].message)
        with pytest.raises(ValueError, match="loopback address only"):
            Client("10.1.2.3:6700")
        with pytest.raises(ValueError, match="asks for TLS, which needs a user kit"):
            Client("https://" + cluster.address)
