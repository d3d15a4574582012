"""The registry in process, at thousands of sessions: the dataset index against a scan, and the
heartbeat timers (a silent worker is dropped in time, the others keep getting heartbeats)."""

from __future__ import annotations

import asyncio
import random
import time

from coordinator.registry import WorkerRegistry, WorkerSession
from coordinator.rounds import Round

WORKERS = 2000
FILES = [f"f{i}.csv" for i in range(12)]


def scan(registry: WorkerRegistry, files: list[str]) -> set[str]:
    """Selection as it was, a scan of every connected worker: those holding every file."""
    return {w.name for w in registry.connected() if all(f in w.datasets for f in files)}


def connect(registry: WorkerRegistry, name: str, datasets: list[str]) -> WorkerSession:
    session = registry.register(name, datasets)
    registry.attach(session)
    return session


def test_selection_by_the_index_equals_selection_by_a_scan_through_connects_changes_and_drops():
    async def run() -> None:
        draw = random.Random(17)
        registry = WorkerRegistry(heartbeat_interval=60, heartbeat_timeout=120)
        sessions = [connect(registry, f"w{i}", draw.sample(FILES, draw.randint(0, 5)))
                    for i in range(WORKERS)]
        registry.register("never-attached", FILES)  # registered only: never eligible
        for step in range(300):
            session = draw.choice(sessions)
            action = draw.random()
            if action < 0.3 and session.connected:
                registry.update_datasets(session, draw.sample(FILES, draw.randint(0, 5)))
            elif action < 0.5 and session.connected:
                registry.drop(session, "test")
            elif action < 0.6 and not session.connected:  # it comes back, new session
                sessions[sessions.index(session)] = connect(
                    registry, session.name, draw.sample(FILES, draw.randint(0, 5)))
            files = draw.sample(FILES, draw.randint(0, 3))
            eligible = registry.eligible(files)
            assert len(eligible) == len({w.name for w in eligible}), "a worker listed twice"
            assert {w.name for w in eligible} == scan(registry, files), (step, files)
            assert all(w.connected for w in eligible)
        assert registry.count() == len(registry.connected()) == sum(s.connected for s in sessions)
        lacking = registry.lacking(["f1.csv", "f2.csv"])
        assert set(lacking) == {w.name for w in registry.connected()} - scan(
            registry, ["f1.csv", "f2.csv"])
        assert all(set(missing) <= {"f1.csv", "f2.csv"} and missing
                   for missing in lacking.values())

    asyncio.run(run())


def test_a_silent_worker_among_thousands_is_dropped_in_time_and_the_others_stay():
    interval, timeout = 0.1, 0.5

    async def run() -> None:
        registry = WorkerRegistry(heartbeat_interval=interval, heartbeat_timeout=timeout)
        waiting = registry.register("late", ["data.csv"])  # never attaches its channel
        sessions = [connect(registry, f"w{i}", ["data.csv"]) for i in range(WORKERS)]
        silent = sessions[1234]
        pending = registry.expect(silent)[1]  # what it owes fails when it is dropped
        started = time.monotonic()
        while not silent.closed_reason and time.monotonic() - started < 10 * timeout:
            for session in sessions:
                if session is not silent:
                    registry.saw(session)  # a heartbeat came
            await asyncio.sleep(interval / 2)
        took = time.monotonic() - started
        silence = float(silent.closed_reason.removeprefix("no heartbeat for ").split()[0])
        assert silence >= timeout, silent.closed_reason
        assert took < timeout + 2 * interval + 0.5, took  # 0.5: a loaded machine
        assert waiting.closed_reason == "it registered but did not connect"
        assert pending.exception() is not None
        assert registry.count() == WORKERS - 1
        assert silent not in registry.eligible(["data.csv"])
        assert {w.name for w in registry.eligible(["data.csv"])} == scan(registry, ["data.csv"])
        for session in sessions:  # the last to register (2,000 take a while on a loaded
            registry.saw(session)  # machine) may not have reached their first beat yet
        await asyncio.sleep(2 * interval)
        beats = [len(s.outbox) for s in sessions if s is not silent]
        assert min(beats) >= 1, min(beats)  # each got heartbeats from its own timer
        for session in sessions:
            registry.drop(session, "done")
        assert all(s.timer is not None and s.timer.cancelled() for s in sessions)

    asyncio.run(run())


def test_a_round_of_thousands_names_five_workers_in_its_log_lines():
    async def run() -> None:
        registry = WorkerRegistry(heartbeat_interval=60, heartbeat_timeout=120)
        sessions = [connect(registry, f"w{i:04d}", ["data.csv"]) for i in range(WORKERS)]
        lines: list[str] = []
        round_ = Round(registry, 1, 1, sessions, 2, lines.append)
        assert round_.names == "w0000, w0001, w0002, w0003, w0004 and 1995 more workers"
        round_.drop(sessions[0], "compute", "test")
        assert lines == ["round 1: worker w0000 dropped in compute: test"]
        assert Round(registry, 2, 1, sessions[:3], 2, lines.append).names == "w0000, w0001, w0002"

    asyncio.run(run())


def test_an_attached_session_gets_one_heartbeat_an_interval_once_its_registration_expires():
    interval, timeout = 0.05, 0.2

    async def run() -> None:
        registry = WorkerRegistry(heartbeat_interval=interval, heartbeat_timeout=timeout)
        session = connect(registry, "w", ["data.csv"])
        started = time.monotonic()
        while time.monotonic() - started < 1.0:  # five times its registration's expiry
            registry.saw(session)
            await asyncio.sleep(interval / 5)
        # The timer its registration set is gone once it attached: it does not beat as well.
        assert len(session.outbox) <= 1.0 / interval + 2, len(session.outbox)
        registry.drop(session, "done")

    asyncio.run(run())
