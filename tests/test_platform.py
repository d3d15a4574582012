"""End to end: a real coordinator and real workers over gRPC on 127.0.0.1."""

from __future__ import annotations

import io
import re
import signal

import grpc
import pandas as pd
import pytest

from cluster import log_text, wages, wait_for
from hand_worker import HandWorker
from sdk.client import Client, ClientError
from sdk.proto import services_pb2 as pb
from sdk.proto import services_pb2_grpc
from tasks import WageAvg

TRACE_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  \S")


def start_three(cluster, sizes=(40, 75, 1)):
    """Three workers, one with a single row: --min-rows 1 lets it send a mean of one row."""
    cluster.start_coordinator()
    frames = {f"w{i + 1}": wages(n, seed=i) for i, n in enumerate(sizes)}
    for name, frame in frames.items():
        cluster.start_worker(name, {"wages.csv": frame}, False, "--min-rows", "1")
    for name in frames:
        cluster.wait_connected(name)
    return frames


def test_wage_avg_over_three_workers_equals_pandas_on_the_stacked_rows(cluster):
    frames = start_three(cluster)
    client = Client("http://" + cluster.address, kit=cluster.kit("alice"))
    task_id = client.create_task(WageAvg().build())
    out = io.StringIO()
    assert client.trace(task_id, out=out) is True
    lines = out.getvalue().splitlines()
    assert lines and all(TRACE_LINE.match(line) for line in lines), lines
    assert "selected 3 worker(s)" in out.getvalue()
    assert lines[-1].endswith(f"task {task_id} finished")

    expected = pd.concat(frames.values(), ignore_index=True).mean()
    result = client.get_result(task_id)
    pd.testing.assert_series_equal(result, expected, rtol=1e-12)
    # A finished task answers at once, and its result is repeatable.
    assert client.wait(task_id) is True
    pd.testing.assert_series_equal(client.get_result(task_id), result)
    info = client.get_task(task_id)
    assert info.state == pb.TASK_STATE_FINISHED and info.name == "wage_avg"
    assert [t.task_id for t in client.list_tasks()] == [task_id]

    # max_clients=2 of the three: two are selected, and the result is over their rows alone.
    two = client.create_task(WageAvg(max_clients=2).build())
    assert client.wait(two), client.get_task(two).error
    selected = re.search(r"selected 2 worker\(s\): (w\d), (w\d)\n", log_text(client, two))
    assert selected, log_text(client, two)
    expected = pd.concat([frames[name] for name in selected.groups()], ignore_index=True).mean()
    pd.testing.assert_series_equal(client.get_result(two), expected, rtol=1e-12)


def test_too_few_workers_fails_after_connection_timeout_saying_how_many_came(cluster):
    cluster.start_coordinator()
    cluster.start_worker("w1", {"wages.csv": wages(10, 1)})
    client = cluster.client()
    task_id = client.create_task(WageAvg(min_clients=2, connection_timeout=1).build())
    assert client.wait(task_id) is False
    info = client.get_task(task_id)
    assert info.state == pb.TASK_STATE_ERROR
    assert "only 1 eligible worker(s) came within connection_timeout=1s (w1)" in info.error
    with pytest.raises(ClientError) as raised:
        client.get_result(task_id)
    assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert f"task {task_id} failed" in str(raised.value) and "only 1 eligible" in str(raised.value)


def test_worker_killed_mid_task_is_dropped_and_the_task_finishes_over_the_rest(cluster):
    frames = start_three(cluster)
    client = cluster.client()
    cluster.workers["w3"].signal(signal.SIGSTOP)  # selected, but can never answer
    task_id = client.create_task(WageAvg(wait_timeout=30).build())
    wait_for(lambda: "selected 3 worker(s)" in log_text(client, task_id), what="selection")
    cluster.workers["w3"].signal(signal.SIGKILL)
    assert client.wait(task_id) is True
    assert "worker w3 dropped" in log_text(client, task_id)
    expected = pd.concat([frames["w1"], frames["w2"]], ignore_index=True).mean()
    pd.testing.assert_series_equal(client.get_result(task_id), expected, rtol=1e-12)


def test_stopped_worker_is_noticed_by_its_silence_and_dropped(cluster):
    frames = start_three(cluster)
    client = cluster.client()
    cluster.workers["w2"].signal(signal.SIGSTOP)
    task_id = client.create_task(WageAvg(wait_timeout=60).build())
    assert client.wait(task_id) is True
    log = log_text(client, task_id)
    assert "selected 3 worker(s)" in log
    assert re.search(r"worker w2 dropped in \w+: no heartbeat for [\d.]+ s", log), log
    expected = pd.concat([frames["w1"], frames["w3"]], ignore_index=True).mean()
    pd.testing.assert_series_equal(client.get_result(task_id), expected, rtol=1e-12)


def test_restarted_coordinator_keeps_tasks_and_workers_find_it_again(cluster):
    frames = start_three(cluster)
    client = cluster.client()
    task_id = client.create_task(WageAvg().build())
    assert client.wait(task_id)
    before = (client.get_task(task_id), log_text(client, task_id), client.get_result(task_id))

    port = int(cluster.address.rpartition(":")[2])
    cluster.coordinator.signal(signal.SIGKILL)
    cluster.coordinator.process.wait()
    mark = len(cluster.coordinator.log())
    cluster.start_coordinator(port)
    for name in frames:
        cluster.wait_connected(name, after=mark)

    info = client.get_task(task_id)
    assert (info.state, info.log_length) == (before[0].state, before[0].log_length)
    assert log_text(client, task_id) == before[1]
    pd.testing.assert_series_equal(client.get_result(task_id), before[2])
    again = client.create_task(WageAvg().build())
    assert client.wait(again)
    assert "selected 3 worker(s)" in log_text(client, again)


class JoinsThenHangs(HandWorker):
    """Joins every task, then answers nothing: a worker still busy with its step."""

    def answer(self, assignment: pb.Assignment) -> bytes | None:
        return b"" if assignment.phase == "join" else None


def _kill_and_restart_coordinator(cluster) -> None:
    port = int(cluster.address.rpartition(":")[2])
    cluster.coordinator.signal(signal.SIGKILL)
    cluster.coordinator.process.wait()
    cluster.start_coordinator(port)


def test_analytics_runs_again_after_a_restart_over_the_same_workers_or_fails_saying_why(cluster):
    frames = {f"w{i + 1}": wages(n, seed=i) for i, n in enumerate((40, 75, 30))}
    cluster.start_coordinator()
    for name in ("w1", "w2"):
        cluster.start_worker(name, {"wages.csv": frames[name]})
    for w3_comes_back in (False, True):
        mark = len(cluster.coordinator.log())
        JoinsThenHangs(cluster, "w3", ["wages.csv"]).start()
        cluster.wait_connected("w3", after=mark)
        client = cluster.client()
        task_id = client.create_task(WageAvg(connection_timeout=8).build())
        wait_for(lambda: "3 worker(s) joined" in log_text(client, task_id), what="the join")
        _kill_and_restart_coordinator(cluster)
        if w3_comes_back:  # as the real daemon this time, holding its rows
            cluster.start_worker("w3", {"wages.csv": frames["w3"]}, False)
        client = cluster.client()
        finished = client.wait(task_id)
        log = log_text(client, task_id)
        assert ("the coordinator restarted while the task was running: it runs again from the "
                "start over the workers it ran over (w1, w2, w3)") in log
        if w3_comes_back:
            assert finished, client.get_task(task_id).error
            expected = pd.concat(frames.values(), ignore_index=True).mean()
            pd.testing.assert_series_equal(client.get_result(task_id), expected, rtol=1e-12)
        else:
            assert not finished
            assert ("w3 did not come back within connection_timeout=8s of the coordinator's "
                    "restart; the task runs again only over the workers it ran over") in (
                        client.get_task(task_id).error)


def test_a_worker_without_the_file_is_not_eligible_and_the_log_says_so(cluster):
    cluster.start_coordinator()
    cluster.start_worker("w1", {"wages.csv": wages(10, 1)})
    cluster.start_worker("w2", {"wages.csv": wages(12, 2)})
    cluster.start_worker("w3", {"other.csv": wages(5, 3)})
    client = cluster.client()
    task_id = client.create_task(WageAvg(connection_timeout=5).build())  # all are connected
    assert client.wait(task_id)
    log = log_text(client, task_id)
    assert "not eligible: 1 worker lacks wages.csv: w3" in log
    assert "selected 2 worker(s): w1, w2" in log


def test_tsv_files_are_tables_too(cluster):
    cluster.start_coordinator()
    frames = [wages(12, 1), wages(7, 2)]
    for i, frame in enumerate(frames):
        cluster.start_worker(f"w{i}", {"wages.tsv": frame})
    client = cluster.client()
    task_id = client.create_task(WageAvg(file="wages.tsv").build())
    assert client.wait(task_id)
    pd.testing.assert_series_equal(client.get_result(task_id),
                                   pd.concat(frames, ignore_index=True).mean(), rtol=1e-12)


def test_a_dataset_that_links_out_of_the_data_dir_is_not_offered(cluster, tmp_path):
    cluster.start_coordinator()
    outside = tmp_path / "secret.csv"
    wages(5, 9).to_csv(outside, index=False)
    for seed, name in enumerate(("w1", "w2", "w3")):
        (cluster.data_dir(name) / "link.csv").symlink_to(outside)
        cluster.start_worker(name, {"wages.csv": wages(10, seed)})
    client = cluster.client()
    task_id = client.create_task(WageAvg(file="link.csv", connection_timeout=2).build())
    assert client.wait(task_id) is False
    assert "only 0 eligible worker(s) came" in client.get_task(task_id).error
    # The daemons keep serving.
    assert client.wait(client.create_task(WageAvg().build()))


def test_unknown_task_ids_are_not_found_everywhere(cluster):
    cluster.start_coordinator()
    client = cluster.client()
    for call in (client.get_task, client.get_result, client.cancel_task, client.wait):
        with pytest.raises(ClientError) as raised:
            call(4242)
        assert raised.value.code == grpc.StatusCode.NOT_FOUND
        assert "task 4242 does not exist" in str(raised.value)


def test_bytes_that_are_not_a_built_task_are_invalid_argument(cluster):
    cluster.start_coordinator()
    cluster.start_worker("w1", {"wages.csv": wages(10, 1)})
    cluster.start_worker("w2", {"wages.csv": wages(12, 2)})
    with cluster.channel() as channel:
        stub = services_pb2_grpc.TaskServiceStub(channel)
        for junk in (b"", b"not a task at all \xff\xfe", WageAvg().build().serialize()[:-7]):
            with pytest.raises(grpc.RpcError) as raised:
                stub.CreateTask(iter([pb.CreateTaskRequest(chunk=junk)]))
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "not a valid built task" in raised.value.details()
        escaping = WageAvg().build().spec
        escaping.datasets[0].file = "../../etc/passwd"
        with pytest.raises(grpc.RpcError) as raised:
            stub.CreateTask(iter([pb.CreateTaskRequest(chunk=escaping.SerializeToString())]))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "escapes the worker's data dir" in raised.value.details()
    client = cluster.client()
    assert client.wait(client.create_task(WageAvg().build()))


def test_result_of_a_running_task_names_its_state_and_cancel_ends_it(cluster):
    cluster.start_coordinator()
    client = cluster.client()
    task_id = client.create_task(WageAvg(connection_timeout=60).build())
    wait_for(lambda: client.get_task(task_id).state == pb.TASK_STATE_RUNNING, what="RUNNING")
    with pytest.raises(ClientError) as raised:
        client.get_result(task_id)
    assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "is RUNNING" in str(raised.value)
    assert client.cancel_task(task_id).state == pb.TASK_STATE_CANCELLED
    assert client.wait(task_id) is False
    with pytest.raises(ClientError, match="was cancelled"):
        client.get_result(task_id)
    with pytest.raises(ClientError, match="already ended"):
        client.cancel_task(task_id)


def test_unreachable_coordinator_is_a_clear_error():
    client = Client("127.0.0.1:1", timeout=3)
    with pytest.raises(ClientError, match="cannot reach the coordinator at 127.0.0.1:1"):
        client.get_task(1)


def test_an_error_on_the_workers_reaches_the_trace_composed_without_a_traceback(cluster):
    cluster.start_coordinator()
    table = wages(10, 1).assign(city="Lyon")
    cluster.start_worker("w1", {"wages.csv": table})
    cluster.start_worker("w2", {"wages.csv": table})
    client = cluster.client()
    task_id = client.create_task(WageAvg().build())
    out = io.StringIO()
    assert client.trace(task_id, out=out) is False
    text = out.getvalue()
    assert "mean() needs numeric columns, and ['city'] are not" in text
    assert "Traceback" not in text and "worker w1" in text
    assert "fewer than min_clients=2" in client.get_task(task_id).error
