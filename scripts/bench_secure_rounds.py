"""Secure FedAvg rounds against plain ones, side by side in the same run.

For each model size and number of workers, each repeat runs three tasks over the same local
workers' daemons (started afresh for each task, mutual TLS), in an order that rotates from one
repeat to the next: plain FedAvg, secure aggregation in 64-bit words (the weights), and secure
aggregation in 32-bit words (the update, with `update_bound`). Training is trivial (it adds 1 to
every weight), so the round is all transfer and aggregation. A task's round time is the median
of its rounds 2.. (from the task's log); the table gives each repeat's times and ratios, then
the median ratio over the repeats. Ratios are what to read on a shared machine: the three
tasks of a repeat run back to back under much the same load.

Usage: python scripts/bench_secure_rounds.py [--sizes 25,100] [--workers 3,8] [--rounds 4]
                                             [--repeats 3]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_learning import Trivial

from deltaflow.localcluster import LocalCluster

MODES = ("plain", "secure64", "secure32")


def round_seconds(parameters: int, workers: int, rounds: int, mode: str) -> float:
    """The median of rounds 2.. of one task in `mode` over `workers` fresh workers."""
    with tempfile.TemporaryDirectory() as folder, \
            LocalCluster(Path(folder), secure=True) as cluster:
        cluster.start_coordinator()
        for i in range(workers):
            np.savez(cluster.data_dir(f"w{i}") / "bench.npz", x=np.zeros((1, 1)), y=np.zeros(1))
            cluster.start_worker(f"w{i}", wait=False)
        for i in range(workers):
            cluster.wait_connected(f"w{i}")
        client = cluster.client(timeout=600)
        task = Trivial(parameters, rounds, workers, secure=mode != "plain")
        task.update_bound = 1.0 if mode == "secure32" else None  # each update is +1, 1 sample
        task_id = client.create_task(task.build())
        if not client.wait(task_id):
            raise SystemExit(f"{mode} task failed: {client.get_task(task_id).error}")
        assert float(client.get_result(task_id)["weights"][0]) == rounds
        logs = client.logs(task_id)
        if mode == "secure32":
            assert any("32-bit words" in entry.message for entry in logs)
        marks = [e.time for e in logs if "loaded the task" in e.message
                 or e.message.startswith("round ") and "/" in e.message.split()[1]]
    return statistics.median(b - a for a, b in list(itertools.pairwise(marks))[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="25,100", help="millions of parameters")
    parser.add_argument("--workers", default="3,8")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{args.rounds} rounds a task, round s: median of rounds 2..; {args.repeats} repeats, "
          "the order of the modes rotating; mutual TLS")
    print("| params | workers | repeat | order | plain s | secure 64-bit s | secure 32-bit s "
          "| 64-bit / plain | 32-bit / plain |")
    print("|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for size in (float(s) for s in args.sizes.split(",")):
        for workers in (int(w) for w in args.workers.split(",")):
            ratios: dict[str, list[float]] = {"secure64": [], "secure32": []}
            for repeat in range(args.repeats):
                order = MODES[repeat % 3:] + MODES[:repeat % 3]
                seconds = {mode: round_seconds(int(size * 1e6), workers, args.rounds, mode)
                           for mode in order}
                for mode, kept in ratios.items():
                    kept.append(seconds[mode] / seconds["plain"])
                print(f"| {size:g}M | {workers} | {repeat + 1} | {', '.join(order)} "
                      f"| {seconds['plain']:.2f} | {seconds['secure64']:.2f} "
                      f"| {seconds['secure32']:.2f} | {ratios['secure64'][-1]:.2f} "
                      f"| {ratios['secure32'][-1]:.2f} |", flush=True)
            print(f"| {size:g}M | {workers} | median | | | | "
                  f"| **{statistics.median(ratios['secure64']):.2f}** "
                  f"| **{statistics.median(ratios['secure32']):.2f}** |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
