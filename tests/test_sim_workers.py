"""A real coordinator with many simulated workers (scripts/sim_workers.py: the real protocol over
mutual TLS, each worker its own certificate): a hung worker is still dropped in time, selection
by dataset takes exactly the holders, and the simulator's own run, briefly."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time

from cluster import ROOT, wait_for

from sdk.client import Client

sys.path.insert(0, str(ROOT / "scripts"))
import sim_workers  # noqa: E402

# How many simulated workers the coordinator takes: 1,000 by default (2,000 take over a minute
# on a loaded 2-core machine); DELTAFLOW_SIM_WORKERS sets it.
WORKERS = int(os.environ.get("DELTAFLOW_SIM_WORKERS", "1000"))
SHARDS = 10
INTERVAL, TIMEOUT = 4.0, 8.0  # the coordinator's heartbeats here: thousands of workers, 2 cores


def test_among_thousands_a_hung_worker_is_dropped_in_time_and_selection_takes_the_holders(
        tmp_path):
    async def run() -> None:
        sim = sim_workers.Simulation(tmp_path / "fed", WORKERS, SHARDS)
        state = tmp_path / "state"
        state.mkdir()
        daemon, address = sim_workers.start_coordinator(
            tmp_path / "fed", state, "--heartbeat-interval", str(INTERVAL),
            "--heartbeat-timeout", str(TIMEOUT),
            "--stream-stall-timeout", "3")  # heartbeats slower than it keep live channels
        try:
            sim.start(address)
            await sim.wait_connected(300)
            hung = sim.workers[7]
            hung.hang()  # its connection stays open: only its silence gives it away
            started = time.monotonic()
            dropped = f"worker {hung.name} dropped: no heartbeat for"
            await asyncio.to_thread(wait_for, lambda: dropped in daemon.log(), TIMEOUT + 30,
                                    "the hung worker to be dropped")
            took = time.monotonic() - started
            assert took < TIMEOUT + INTERVAL + 10, took  # 10: a loaded machine
            assert daemon.log().count(" dropped: ") == 1, "only the hung worker is dropped"

            # shard-3.csv: held by workers 3, 13, 23, ...; a task over all of them selects them
            holders = {w.name for w in sim.workers if w.index % SHARDS == 3}
            result = await asyncio.to_thread(sim_workers.run_task, tmp_path / "fed", address,
                                             len(holders), False, "shard-3.csv", 60)
            assert result["finished"] and result["right"], result
            with Client(address, kit=tmp_path / "fed" / "users" / sim_workers.ANALYST) as client:
                log = [entry.message for entry in client.logs(result["task_id"])]
                covered = set(client.get_task(result["task_id"]).workers)
            assert covered == holders  # whose rows the result covers: exactly the holders
            first = sorted(holders)[:5]
            assert (f"selected {len(holders)} worker(s): {', '.join(first)} and "
                    f"{len(holders) - 5} more workers") in "\n".join(log)
            assert sum("not eligible" in line for line in log) == 1  # one line, for all others
            assert f"not eligible: {WORKERS - 1 - len(holders)} workers lack shard-3.csv" in \
                "\n".join(log)
        finally:
            await sim.stop()
            daemon.stop()

    asyncio.run(run())


def test_the_simulator_measures_a_coordinator_and_runs_plain_and_secure_tasks(tmp_path):
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "sim_workers.py"), "--workers", "12",
         "--fed", str(tmp_path / "fed"), "--measure", "1", "--settle", "0", "--task", "10",
         "--secure-task", "4", "--missing-tasks", "2"],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert re.search(r"plain task, 10 workers \(s, log rows, right\)\s+[\d.]+, \d+, True", out), out
    assert re.search(r"secure task, 4 workers \(s, log rows, right\)\s+[\d.]+, \d+, True", out), out
    # Each task naming a file nobody holds logs three lines: created, not eligible, failed.
    assert re.search(r"2 tasks naming a file nobody holds: log rows\s+6\n", out), out
    assert re.search(r"health check \(ms, median / max of 20\)\s+[\d.]+ / [\d.]+", out), out
