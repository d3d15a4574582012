"""Latency of an analytics task, from create_task to its result, over three local workers,
with mutual TLS and without (--insecure), and the CPU time each side spends per task.

Usage: python scripts/bench_analytics.py [--runs 30] [--rows 10000] [--tls both|on|off]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

import psutil  # noqa: E402

from deltaflow.localcluster import LocalCluster  # noqa: E402
from deltaflow.samples import wages  # noqa: E402
from sdk.client import Client  # noqa: E402
from wage_avg import WageAvg  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--rows", type=int, default=10_000, help="rows per worker")
    parser.add_argument("--tls", choices=("both", "on", "off"), default="both",
                        help="mutual TLS with a throw-away federation, --insecure, or both")
    args = parser.parse_args()
    modes = {"both": (True, False), "on": (True,), "off": (False,)}[args.tls]
    print(f"WageAvg over 3 workers x {args.rows} rows, {args.runs} runs each, "
          "create_task -> result; CPU ms per task (coordinator / the three workers)")
    print(f"| {'mode':<9} | {'median (s)':>10} | {'p95 (s)':>8} | {'min (s)':>8} | {'max (s)':>8} "
          f"| {'coord. CPU ms':>13} | {'workers CPU ms':>14} | target median |")
    for secure in modes:
        latencies, coordinator_cpu, workers_cpu = _measure(secure, args.rows, args.runs)
        p95 = latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))]
        mode = "mTLS" if secure else "plaintext"
        print(f"| {mode:<9} | {statistics.median(latencies):>10.4f} | {p95:>8.4f} "
              f"| {latencies[0]:>8.4f} | {latencies[-1]:>8.4f} "
              f"| {1000 * coordinator_cpu / args.runs:>13.1f} "
              f"| {1000 * workers_cpu / args.runs:>14.1f} | < 0.5 s       |")


def _measure(secure: bool, rows: int, runs: int) -> tuple[list[float], float, float]:
    """Sorted latencies, and the CPU seconds the coordinator and the workers spent on them."""
    with tempfile.TemporaryDirectory() as folder, \
            LocalCluster(Path(folder), secure=secure) as cluster:
        cluster.start_coordinator()
        for i in range(3):
            cluster.start_worker(f"w{i}", {"wages.csv": wages(rows, seed=i)})
        client = cluster.client()
        task = WageAvg().build()
        client.get_result(_run(client, task))  # warm-up: imports, connections
        coordinator = psutil.Process(cluster.coordinator.process.pid)
        workers = [psutil.Process(d.process.pid) for d in cluster.workers.values()]
        before = _cpu([coordinator]), _cpu(workers)
        latencies = []
        for _ in range(runs):
            started = time.perf_counter()
            client.get_result(_run(client, task))
            latencies.append(time.perf_counter() - started)
        spent = _cpu([coordinator]) - before[0], _cpu(workers) - before[1]
    return sorted(latencies), *spent


def _cpu(processes: list[psutil.Process]) -> float:
    return sum(p.cpu_times().user + p.cpu_times().system for p in processes)


def _run(client: Client, task) -> int:
    task_id = client.create_task(task)
    if not client.wait(task_id):
        raise SystemExit(f"task {task_id} failed: {client.get_task(task_id).error}")
    return task_id


if __name__ == "__main__":
    main()
