"""The engine with real subprocesses: lifecycle, failures, kills, limits, GPUs (fake), reports."""

import json
import os
import signal
import threading
import time

import pytest
from engine_tasks import (BadResultTask, CrashingTask, EchoTask, FailingTask, HangingTask,
                          GrandchildTask, LoadOomTask, OddResultTask, OomTask, SlowTask,
                          UnrebuildableResultTask)

from worker.engine import (EngineLimits, FakeInventory, GpuInfo, Scheduler, Task, TaskGroup,
                           TaskStatus)
from worker.engine.pool import RamInfo

pytestmark = pytest.mark.timeout(60)
GiB = 1024**3


def limits(**overrides):
    return EngineLimits(**{"max_tasks": 4, "poll_interval": 0.05, **overrides})


def fake_gpus(*free_total):
    return FakeInventory([GpuInfo(i, f"Fake {i}", int(free * GiB), int(total * GiB))
                          for i, (free, total) in enumerate(free_total)])


def run(tmp_path, *tasks, group=None, **kwargs):
    group = group or TaskGroup("g")
    for task in tasks:
        group.add_task(task)
    inventory = kwargs.pop("inventory", FakeInventory())
    scheduler = Scheduler(tmp_path, limits(**kwargs), inventory)
    return scheduler.execute(group)


def test_lifecycle_by_hand(tmp_path):
    task = EchoTask("t1")
    assert (task.status, task.device, task.workdir, task.result) == (TaskStatus.INIT, None,
                                                                    None, None)
    task.start(tmp_path / "t1")
    assert task.status is TaskStatus.AVAILABLE and task.is_alive()
    assert task.workdir == str(tmp_path / "t1")
    task.start_load()
    assert task.status is TaskStatus.LOADING
    assert task.receive().kind == "loaded" and task.status is TaskStatus.WAITING
    task.start_train("cpu")
    assert task.status is TaskStatus.TRAINING and task.device == "cpu"
    reply = task.receive()
    assert reply.kind == "result" and task.status is TaskStatus.FINISHED
    assert task.result == reply.data
    assert task.result["cwd"] == task.workdir
    assert task.result["pid"] == task.result["loaded_pid"] != os.getpid()
    assert task.result["attr_device"] == "cpu"
    task.exit()
    assert not task.is_alive() and task.status is TaskStatus.FINISHED
    with pytest.raises(RuntimeError, match="FINISHED"):
        task.start_load()


def test_exit_before_finishing_is_exited(tmp_path):
    task = EchoTask("t")
    task.start(tmp_path / "t")
    task.exit()
    assert task.status is TaskStatus.EXITED and not task.is_alive()


def test_group_api():
    group = TaskGroup()
    first, second = EchoTask(1), EchoTask("two")
    group.add_task(first)
    group.add_task(second)
    with pytest.raises(ValueError, match="already"):
        group.add_task(EchoTask(1))
    assert group.get_task(1) is first and group.get_task("nope") is None
    assert group.retrieve_task(TaskStatus.INIT) in (first, second)
    assert group.retrieve_task(TaskStatus.TRAINING) is None
    assert not group.finished()
    group.report_exception(1, "load", "Traceback ...\nValueError: x")
    group.report_finish("two", {"x": 1})
    assert group.finished()
    assert (first.status, second.status, second.result) == (TaskStatus.EXCEPTION,
                                                           TaskStatus.FINISHED, {"x": 1})
    assert group.result["two"]["data"] == {"x": 1} and group.result[1]["stage"] == "load"


@pytest.mark.parametrize("bad", ["a/b", "..", ""])
def test_names_must_be_directory_names(bad):
    with pytest.raises(ValueError):
        EchoTask(bad)
    with pytest.raises(ValueError):
        TaskGroup(bad)


def test_pin_must_be_a_device():
    with pytest.raises(ValueError, match="cuda:N"):
        EchoTask("t", device="gpu1")


def test_group_runs_tasks_and_returns_results(tmp_path):
    group = TaskGroup()
    scheduler = Scheduler(tmp_path, limits(), FakeInventory())
    first = scheduler.execute(group_of(group, 5))
    second_group = group_of(TaskGroup(), 2)
    scheduler.execute(second_group)
    assert (group.index, group.group_name, second_group.group_name) == (0, "group-0", "group-1")
    assert group.workdir == str(tmp_path / "group-0")
    assert first is group.result and sorted(first) == list(range(5))
    for task_id, entry in first.items():
        assert entry["status"] == "FINISHED" and entry["device"] == "cpu"
        assert entry["data"]["cwd"] == str(tmp_path / "group-0" / str(task_id))
        assert entry["data"]["loads"] == 1 and entry["data"]["task_id"] == task_id
        assert entry["load_seconds"] >= 0 and entry["train_seconds"] >= 0
        assert group.get_task(task_id).status is TaskStatus.FINISHED
        assert not group.get_task(task_id).is_alive()


def group_of(group, count, cls=EchoTask, **kwargs):
    for i in range(count):
        group.add_task(cls(i, **kwargs))
    return group


def test_execute_all_runs_groups_in_order(tmp_path):
    groups = [group_of(TaskGroup(name), 2, SlowTask, seconds=0.05) for name in ("a", "b")]
    results = Scheduler(tmp_path, limits(), FakeInventory()).execute_all(groups)
    assert [g.index for g in groups] == [0, 1]
    last_of_a = max(e["data"]["window"][1] for e in results[0].values())
    first_of_b = min(e["data"]["load_window"][0] for e in results[1].values())
    assert last_of_a <= first_of_b


@pytest.mark.parametrize("stage", ["load", "train"])
def test_failure_in_a_stage_is_reported_and_others_go_on(tmp_path, stage):
    result = run(tmp_path, FailingTask("bad", stage), EchoTask("good1"), EchoTask("good2"))
    bad = result["bad"]
    assert bad["status"] == "EXCEPTION" and bad["stage"] == stage
    assert "Traceback" in bad["message"] and f"ValueError: boom in {stage} of bad" in bad["message"]
    assert "data" not in bad
    assert result["good1"]["status"] == result["good2"]["status"] == "FINISHED"


def test_train_must_return_a_dict(tmp_path):
    entry = run(tmp_path, BadResultTask("t"))["t"]
    assert entry["status"] == "EXCEPTION" and "must return a dict, not list" in entry["message"]


def test_unpicklable_task_fails_in_load(tmp_path):
    task = EchoTask("t")
    task.callback = lambda: None
    entry = run(tmp_path, task, EchoTask("ok"))
    assert entry["t"]["status"] == "EXCEPTION" and entry["t"]["stage"] == "load"
    assert "could not be sent" in entry["t"]["message"]
    assert entry["ok"]["status"] == "FINISHED"


def test_killed_subprocess_is_an_exception(tmp_path):
    pid_file = str(tmp_path / "hanging.pid")

    def kill_when_training():
        while not os.path.exists(pid_file):
            time.sleep(0.01)
        os.kill(int(open(pid_file).read()), signal.SIGKILL)

    killer = threading.Thread(target=kill_when_training)
    killer.start()
    result = run(tmp_path, HangingTask("victim", pid_file), EchoTask("bystander"))
    killer.join()
    victim = result["victim"]
    assert victim["status"] == "EXCEPTION" and victim["stage"] == "train"
    assert "SIGKILL" in victim["message"]
    assert result["bystander"]["status"] == "FINISHED"


def test_segfault_and_exit_are_exceptions(tmp_path):
    result = run(tmp_path, CrashingTask("segv", "segfault"), CrashingTask("quit", "exit"))
    assert result["segv"]["stage"] == "train" and "SIGSEGV" in result["segv"]["message"]
    assert "Fatal Python error" in result["segv"]["message"]  # faulthandler, from the log
    assert result["quit"]["stage"] == "load" and "exited with code 3" in result["quit"]["message"]
    assert "about to exit" in result["quit"]["message"]
    assert all(e["status"] == "EXCEPTION" for e in result.values())


def overlaps(windows):
    """The most windows open at one moment."""
    edges = sorted([(start, 1) for start, _ in windows] + [(end, -1) for _, end in windows])
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


def test_concurrency_stays_within_max_tasks(tmp_path):
    group = group_of(TaskGroup(), 6, SlowTask, seconds=0.15)
    result = run(tmp_path, group=group, max_tasks=2)
    lives = [(e["started"], e["finished"]) for e in result.values()]
    trains = [e["data"]["window"] for e in result.values()]
    assert overlaps(lives) == 2
    assert overlaps(trains) == 2


def test_loading_stays_within_max_loading(tmp_path):
    group = group_of(TaskGroup(), 4, SlowTask, seconds=0.15)
    result = run(tmp_path, group=group, max_tasks=4, max_loading=1)
    assert overlaps([e["data"]["load_window"] for e in result.values()]) == 1


def test_ram_is_checked_before_load(tmp_path):
    ram = lambda: RamInfo(available=3 * GiB, total=64 * GiB)  # noqa: E731
    group = TaskGroup(estimate_memory="2GiB")
    group_of(group, 3, SlowTask, seconds=0.1)
    group.add_task(EchoTask("huge", estimate_memory="100GiB"))
    scheduler = Scheduler(tmp_path, limits(max_tasks=4), FakeInventory(), ram=ram)
    result = scheduler.execute(group)
    # 3 GiB available covers one 2 GiB load at a time
    assert overlaps([result[i]["data"]["load_window"] for i in range(3)]) == 1
    assert result["huge"]["status"] == "EXCEPTION" and result["huge"]["stage"] == "load"
    assert "needs 100.00 GiB of memory" in result["huge"]["message"]


def test_gpu_placement_and_pinning(tmp_path):
    inventory = fake_gpus((12, 16), (10, 16), (8, 16))
    group = TaskGroup(estimate_cuda_memory="1GiB")
    group.add_task(EchoTask("auto"))
    group.add_task(EchoTask("pinned", device="cuda:2"))
    group.add_task(EchoTask("on-cpu", device="cpu"))
    result = run(tmp_path, group=group, inventory=inventory)
    assert result["auto"]["device"] == result["auto"]["data"]["device"] == "cuda:0"
    assert result["pinned"]["data"]["device"] == "cuda:2"
    assert result["on-cpu"]["data"]["device"] == "cpu"
    assert result["auto"]["data"]["attr_device"] == "cuda:0"


def test_group_pin_applies_to_its_tasks(tmp_path):
    group = TaskGroup("pinned", device="cuda:1")
    group.add_task(EchoTask("a"))
    group.add_task(EchoTask("b", device="cuda:0"))
    result = run(tmp_path, group=group, inventory=fake_gpus((12, 16), (10, 16)))
    assert result["a"]["device"] == "cuda:1" and result["b"]["device"] == "cuda:0"


def test_tasks_wait_for_gpu_memory(tmp_path):
    # each task needs 5 GiB; the GPU keeps 1 GiB back, so only one fits at a time
    group = group_of(TaskGroup(estimate_cuda_memory="5GiB"), 3, SlowTask, seconds=0.1)
    result = run(tmp_path, group=group, inventory=fake_gpus((10, 10)), gpu_headroom=GiB,
                 gpu_headroom_fraction=0)
    assert {e["device"] for e in result.values()} == {"cuda:0"}
    assert overlaps([e["data"]["window"] for e in result.values()]) == 1


def test_headroom_steers_to_another_gpu(tmp_path):
    group = group_of(TaskGroup(estimate_cuda_memory="3.5GiB"), 2, EchoTask)
    # cuda:0 has the most free memory, but its headroom leaves only 3 GiB
    result = run(tmp_path, group=group, inventory=fake_gpus((6, 60), (4.5, 8)),
                 gpu_headroom=0, gpu_headroom_fraction=0.05)
    assert {e["device"] for e in result.values()} == {"cuda:1"}


def test_too_big_for_every_gpu_is_an_exception(tmp_path):
    result = run(tmp_path, EchoTask("big", estimate_cuda_memory="40GiB"), EchoTask("ok"),
                 inventory=fake_gpus((16, 16), (24, 24)))
    assert result["big"]["status"] == "EXCEPTION" and result["big"]["stage"] == "train"
    assert "largest GPU" in result["big"]["message"]
    assert result["ok"]["status"] == "FINISHED"


def test_pin_to_missing_gpu_is_an_exception(tmp_path):
    result = run(tmp_path, EchoTask("lost", device="cuda:3"), inventory=fake_gpus((16, 16)))
    assert "cuda:3" in result["lost"]["message"] and result["lost"]["stage"] == "train"


def test_no_gpu_runs_on_cpu(tmp_path):
    result = run(tmp_path, EchoTask("t", estimate_cuda_memory="8GiB"), inventory=FakeInventory())
    assert result["t"]["device"] == result["t"]["data"]["device"] == "cpu"


def test_cuda_oom_is_retried_on_another_gpu(tmp_path):
    result = run(tmp_path, OomTask("t"), inventory=fake_gpus((12, 16), (10, 16)))
    entry = result["t"]
    assert entry["status"] == "FINISHED" and entry["data"]["device"] == "cuda:1"
    assert entry["attempts"] == ["cuda:0", "cuda:1"]
    assert entry["data"]["loads"] == 1  # the retry reuses the loaded process


def test_cuda_oom_gives_up_after_the_retries(tmp_path):
    result = run(tmp_path, OomTask("t", oom_on="all"), inventory=fake_gpus((12, 16), (10, 16)),
                 oom_retries=2)
    entry = result["t"]
    assert entry["status"] == "EXCEPTION" and entry["stage"] == "train"
    assert entry["attempts"] == ["cuda:0", "cuda:1", "cuda:0"]
    assert "gave up after 2 retries" in entry["message"]
    assert "OutOfMemoryError: CUDA out of memory on cuda:0 (simulated)" in entry["message"]


def test_cuda_oom_in_load_is_an_exception_not_a_retry(tmp_path):
    entry = run(tmp_path, LoadOomTask("t"), inventory=fake_gpus((12, 16), (10, 16)))["t"]
    assert entry["status"] == "EXCEPTION" and entry["stage"] == "load"
    assert "CUDA out of memory while loading" in entry["message"] and "data" not in entry


def test_reports_take_results_with_keys_json_cannot(tmp_path):
    group = TaskGroup("odd")
    group.add_task(OddResultTask("t"))
    Scheduler(tmp_path, EngineLimits(max_tasks=1), FakeInventory()).execute(group)
    report = json.loads((tmp_path / "reports" / "odd.json").read_text())
    assert report["tasks"]["t"]["data"] == {"np.int64(1)": 2, "nested": {"(1, 2)": "pair"}}


def test_a_result_the_parent_cannot_rebuild_is_the_tasks_error(tmp_path):
    result = run(tmp_path, UnrebuildableResultTask("u"), EchoTask("ok"))
    assert result["ok"]["status"] == "FINISHED"
    assert result["u"]["status"] == "EXCEPTION" and result["u"]["stage"] == "train"
    assert "cannot be rebuilt outside its subprocess" in result["u"]["message"]


def test_processes_a_task_started_end_with_it(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    assert run(tmp_path, GrandchildTask("g", str(pid_file)))["g"]["status"] == "FINISHED"
    pid = int(pid_file.read_text())

    def alive() -> bool:
        try:
            with open(f"/proc/{pid}/status") as status:
                return "State:\tZ" not in status.read()
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 10
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive()


def test_reports(tmp_path):
    group = TaskGroup("report-me")
    group.add_task(EchoTask("fine"))
    group.add_task(FailingTask("broken", "train"))
    Scheduler(tmp_path, limits(), FakeInventory()).execute(group)
    document = json.loads((tmp_path / "reports" / "report-me.json").read_text())
    assert (document["group"], document["finished"], document["failed"]) == ("report-me", 1, 1)
    assert document["tasks"]["fine"]["data"]["task_id"] == "fine"
    assert document["tasks"]["broken"]["stage"] == "train"
    assert "Traceback" in document["tasks"]["broken"]["message"]
    markdown = (tmp_path / "reports" / "report-me.md").read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in markdown.splitlines()
            if line.startswith("| ") and " | " in line}
    assert "FINISHED" in rows["fine"] and "cpu" in rows["fine"]
    assert "EXCEPTION" in rows["broken"] and "ValueError: boom in train of broken" in rows["broken"]


def test_task_without_load_or_train(tmp_path):
    entry = run(tmp_path, Task("bare"))["bare"]
    assert entry["stage"] == "load" and "NotImplementedError" in entry["message"]


def test_task_class_the_subprocess_cannot_import(tmp_path, monkeypatch):
    (tmp_path / "vanishing_tasks.py").write_text(
        "from worker.engine import Task\n"
        "class Vanishing(Task):\n"
        "    def load(self): pass\n"
        "    def train(self, device): return {}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from vanishing_tasks import Vanishing

    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p != str(tmp_path)])
    result = run(tmp_path, Vanishing("v"), EchoTask("fine"))
    assert result["v"]["status"] == "EXCEPTION" and result["v"]["stage"] == "load"
    assert "exited with code 1" in result["v"]["message"]
    assert result["fine"]["status"] == "FINISHED"
