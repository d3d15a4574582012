"""EngineSession: persistent tasks that load once and train per round, as the worker daemon
uses them; real subprocesses."""

import asyncio
import os
import signal
import threading
import time

import pytest
from engine_tasks import EchoTask, FailingTask, HangingTask, LaterOomTask, OomTask, SlowTask

from worker.engine import (EngineLimits, EngineSession, FakeInventory, GpuInfo, SessionCounts,
                           TaskError)

pytestmark = pytest.mark.timeout(60)
GiB = 1024**3


def session(tmp_path, inventory=None, **limits):
    limits = EngineLimits(**{"max_tasks": 4, "poll_interval": 0.05, **limits})
    return EngineSession(tmp_path, limits, inventory or FakeInventory())


def test_loads_once_and_trains_every_round(tmp_path):
    with session(tmp_path) as engine:
        handle = engine.open(EchoTask("fl-7"))
        rounds = [handle.train({"round": r, "weights": [r] * 3}) for r in range(3)]
    assert [r["round_input"] for r in rounds] == [{"round": r, "weights": [r] * 3}
                                                  for r in range(3)]
    assert [r["trains"] for r in rounds] == [1, 2, 3]
    assert {r["loads"] for r in rounds} == {1}
    assert len({r["pid"] for r in rounds}) == 1
    assert rounds[0]["cwd"] == str(tmp_path / "session" / "fl-7")
    assert not handle.task.is_alive()


def test_load_failure_raises_with_traceback(tmp_path):
    with session(tmp_path, max_tasks=1) as engine:
        with pytest.raises(TaskError) as caught:
            engine.open(FailingTask("x", "load"))
        assert caught.value.stage == "load"
        assert "ValueError: boom in load of x" in caught.value.message
        assert "Traceback" in caught.value.message
        # its process slot was given back: with max_tasks=1 another task still opens
        assert engine.open(EchoTask("y")).train()["task_id"] == "y"
        assert engine.counts() == SessionCounts(1, 2, {"load_failed": 1})
    assert engine.counts() == SessionCounts(0, 2, {"load_failed": 1, "closed": 1})


def test_train_failure_keeps_the_task_open(tmp_path):
    with session(tmp_path) as engine:
        handle = engine.open(FailingTask("x", "train"))
        for _ in range(2):
            with pytest.raises(TaskError, match="boom in train of x") as caught:
                handle.train()
            assert caught.value.stage == "train"
        assert handle.task.is_alive()


def test_killed_subprocess_raises(tmp_path):
    pid_file = str(tmp_path / "pid")
    with session(tmp_path) as engine:
        handle = engine.open(HangingTask("h", pid_file))

        def kill():
            while not os.path.exists(pid_file):
                time.sleep(0.01)
            os.kill(int(open(pid_file).read()), signal.SIGKILL)

        threading.Thread(target=kill).start()
        with pytest.raises(TaskError, match="SIGKILL"):
            handle.train()
        with pytest.raises(TaskError, match="not running"):
            handle.train()
        assert engine.counts() == SessionCounts(0, 1, {"died": 1})
        handle.close()  # counted once, as it died
    assert engine.counts().ended == {"died": 1}


def test_close_stops_a_running_train(tmp_path):
    pid_file = str(tmp_path / "pid")
    engine = session(tmp_path)
    handle = engine.open(HangingTask("h", pid_file))
    errors = []

    def train():
        try:
            handle.train()
        except TaskError as error:
            errors.append(error)

    trainer = threading.Thread(target=train)
    trainer.start()
    while not os.path.exists(pid_file):
        time.sleep(0.01)
    engine.close()
    trainer.join()
    assert len(errors) == 1 and errors[0].stage == "train"
    assert not handle.task.is_alive()


def test_open_waits_for_a_process_slot(tmp_path):
    with session(tmp_path, max_tasks=1) as engine:
        first = engine.open(EchoTask("a"))
        opened = []
        opener = threading.Thread(target=lambda: opened.append(engine.open(EchoTask("b"))))
        opener.start()
        opener.join(0.3)
        assert opener.is_alive() and not opened  # still waiting for the only slot
        first.close()
        opener.join()
        assert opened[0].train()["task_id"] == "b"


def test_oom_retried_on_another_gpu_and_device_kept(tmp_path):
    inventory = FakeInventory([GpuInfo(0, "A", 12 * GiB, 16 * GiB),
                               GpuInfo(1, "B", 10 * GiB, 16 * GiB)])
    with session(tmp_path, inventory) as engine:
        handle = engine.open(OomTask("t", estimate_cuda_memory="2GiB"))
        assert handle.train()["device"] == "cuda:1"
        assert handle.task.attempts == ["cuda:0", "cuda:1"]
        # cuda:0 has more room, but the task stays where it trained last
        assert handle.train()["device"] == handle.device == "cuda:1"


def test_oom_in_a_later_round_moves_off_the_last_device(tmp_path):
    inventory = FakeInventory([GpuInfo(0, "A", 12 * GiB, 16 * GiB),
                               GpuInfo(1, "B", 10 * GiB, 16 * GiB)])
    with session(tmp_path, inventory) as engine:
        handle = engine.open(LaterOomTask("t", estimate_cuda_memory="2GiB"))
        assert handle.train("fine")["device"] == "cuda:0"
        assert handle.train("oom")["device"] == "cuda:1"
        assert handle.task.attempts == ["cuda:0", "cuda:1"]


def test_concurrent_trains_share_a_gpu_within_its_memory(tmp_path):
    # 6 GiB each on a 10 GiB GPU: the two rounds must take turns
    inventory = FakeInventory([GpuInfo(0, "A", 10 * GiB, 10 * GiB)])
    with session(tmp_path, inventory, gpu_headroom=0, gpu_headroom_fraction=0) as engine:
        handles = [engine.open(SlowTask(i, seconds=0.1, estimate_cuda_memory="6GiB"))
                   for i in range(2)]

        async def both():
            return await asyncio.gather(*(h.train_async(i) for i, h in enumerate(handles)))

        first, second = asyncio.run(both())
    assert first["device"] == second["device"] == "cuda:0"
    (s1, e1), (s2, e2) = first["window"], second["window"]
    assert e1 <= s2 or e2 <= s1


def test_async_api(tmp_path):
    async def main():
        engine = session(tmp_path)
        handles = await asyncio.gather(*(engine.open_async(SlowTask(i, seconds=0.1))
                                         for i in range(3)))
        results = await asyncio.gather(*(h.train_async(f"round input {i}")
                                         for i, h in enumerate(handles)))
        await asyncio.gather(*(h.close_async() for h in handles))
        return handles, results

    handles, results = asyncio.run(main())
    assert [r["round_input"] for r in results] == [f"round input {i}" for i in range(3)]
    assert not any(h.task.is_alive() for h in handles)


def test_duplicate_open_refused(tmp_path):
    with session(tmp_path) as engine:
        engine.open(EchoTask("same"))
        with pytest.raises(ValueError, match="already open"):
            engine.open(EchoTask("same"))


def test_async_failures_reach_the_awaiting_coroutine(tmp_path):
    async def scenario():
        with session(tmp_path) as engine:
            with pytest.raises(TaskError, match="boom in load of a"):
                await engine.open_async(FailingTask("a", "load"))
            handle = await engine.open_async(FailingTask("b", "train"))
            with pytest.raises(TaskError, match="boom in train of b"):
                await asyncio.wait_for(handle.train_async(), 30)

    asyncio.run(scenario())
