"""Throughput of the worker engine: no-op tasks per second through Scheduler at default limits.

Each run is one group of --tasks tasks whose load and train do nothing, so the time is the
engine's own: a subprocess per task, its load and train round trips, placement, reports.
The first run also starts the engine's fork server.

Usage: python scripts/bench_engine.py [--tasks 100] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from worker.engine import EngineLimits, Scheduler, Task, TaskGroup  # noqa: E402

TARGET = 10.0  # tasks per second; Fedflow's loop starts at most one task every 3 s


class NoopTask(Task):
    def load(self) -> None:
        pass

    def train(self, device: str) -> dict:
        return {"device": device}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    limits = EngineLimits()
    print(f"{args.tasks} no-op tasks per run; default limits: max_tasks={limits.max_tasks}, "
          f"max_loading={limits.max_loading}; {os.cpu_count()} CPUs")
    print(f"| {'run':>3} | {'tasks':>5} | {'finished':>8} | {'seconds':>7} | {'tasks/s':>7} "
          f"| target     |")
    print("|----:|------:|---------:|--------:|--------:|------------|")
    with tempfile.TemporaryDirectory() as folder:
        scheduler = Scheduler(folder, limits)
        for run in range(1, args.runs + 1):
            group = TaskGroup(f"bench-{run}")
            for i in range(args.tasks):
                group.add_task(NoopTask(i))
            started = time.perf_counter()
            result = scheduler.execute(group)
            seconds = time.perf_counter() - started
            finished = sum(entry["status"] == "FINISHED" for entry in result.values())
            rate = args.tasks / seconds
            verdict = "met" if rate >= TARGET and finished == args.tasks else "MISSED"
            print(f"| {run:>3} | {args.tasks:>5} | {finished:>8} | {seconds:>7.3f} "
                  f"| {rate:>7.1f} | >= {TARGET:.0f} {verdict:<4} |")


if __name__ == "__main__":
    main()
