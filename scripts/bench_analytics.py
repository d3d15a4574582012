"""Latency of an analytics task, from create_task to its result, over three local workers.

Usage: python scripts/bench_analytics.py [--runs 30] [--rows 10000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

from deltaflow.localcluster import LocalCluster  # noqa: E402
from deltaflow.samples import wages  # noqa: E402
from sdk.client import Client  # noqa: E402
from wage_avg import WageAvg  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--rows", type=int, default=10_000, help="rows per worker")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, LocalCluster(Path(folder)) as cluster:
        address = cluster.start_coordinator()
        for i in range(3):
            cluster.start_worker(f"w{i}", {"wages.csv": wages(args.rows, seed=i)})
        client = Client(address)
        task = WageAvg().build()
        client.get_result(_run(client, task))  # warm-up: imports, connections
        latencies = []
        for _ in range(args.runs):
            started = time.perf_counter()
            client.get_result(_run(client, task))
            latencies.append(time.perf_counter() - started)
    latencies.sort()
    p95 = latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))]
    print(f"WageAvg over 3 workers x {args.rows} rows, {args.runs} runs, create_task -> result")
    print(f"| {'median (s)':>10} | {'p95 (s)':>8} | {'min (s)':>8} | {'max (s)':>8} | target median |")
    print(f"| {statistics.median(latencies):>10.4f} | {p95:>8.4f} | {latencies[0]:>8.4f} "
          f"| {latencies[-1]:>8.4f} | < 0.5 s       |")


def _run(client: Client, task) -> int:
    task_id = client.create_task(task)
    if not client.wait(task_id):
        raise SystemExit(f"task {task_id} failed: {client.get_task(task_id).error}")
    return task_id


if __name__ == "__main__":
    main()
