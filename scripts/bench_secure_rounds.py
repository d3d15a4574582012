"""Secure FedAvg rounds against plain ones, side by side in the same run.

For each model size and number of workers, each repeat runs three tasks over the same local
workers' daemons (started afresh for each task, mutual TLS), in an order that rotates from one
repeat to the next: plain FedAvg, secure aggregation in 64-bit words (the weights), and secure
aggregation in 32-bit words (the update, with `update_bound`). Training is trivial (it adds 1 to
every weight), so the round is all transfer and aggregation. A task's round time is the median
of its rounds 2.. (from the task's log), and so is its CPU time (the coordinator's and the
workers' with their engine tasks, sampled every 0.1 s and read at the log's marks); the table
gives each repeat's times and ratios, then the median ratios over the repeats. Ratios are what
to read on a shared machine: the three tasks of a repeat run back to back under much the same
load, and CPU seconds hardly depend on it.

Usage: python scripts/bench_secure_rounds.py [--sizes 25,100] [--workers 3,8] [--rounds 4]
                                             [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_learning import Trivial, _cpu_seconds, start_daemons

from deltaflow.localcluster import LocalCluster

MODES = ("plain", "secure64", "secure32")


class TaskFailed(Exception):
    """A task failed (on a loaded machine a worker may miss its heartbeats while it loads)."""


def measured(parameters: int, workers: int, rounds: int, mode: str,
             attempts: int = 3) -> tuple[float, float]:
    """`round_seconds`, tried again (with fresh daemons) when its task fails."""
    for attempt in range(1, attempts + 1):
        try:
            return round_seconds(parameters, workers, rounds, mode)
        except TaskFailed as failure:
            print(f"attempt {attempt}: {failure}".splitlines()[0], file=sys.stderr, flush=True)
    raise SystemExit(f"the {mode} task failed {attempts} times")


class CPUSampler(threading.Thread):
    """The CPU seconds of some processes and their children, sampled every 0.1 s."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.processes = [psutil.Process(pid) for pid in pids]
        self.samples: list[tuple[float, float]] = []  # (wall clock, CPU seconds so far)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            self.samples.append((time.time(), _cpu_seconds(self.processes)))

    def at(self, moment: float) -> float:
        times, cpu = zip(*self.samples, strict=True)
        return float(np.interp(moment, times, cpu))


def round_seconds(parameters: int, workers: int, rounds: int,
                  mode: str) -> tuple[float, float]:
    """The median of rounds 2.. of one task in `mode` over `workers` fresh workers: wall
    seconds, and CPU seconds of every process of the federation."""
    with tempfile.TemporaryDirectory() as folder, \
            LocalCluster(Path(folder), secure=True) as cluster:
        start_daemons(cluster, workers)
        client = cluster.client(timeout=600)
        task = Trivial(parameters, rounds, workers, secure=mode != "plain")
        task.update_bound = 1.0 if mode == "secure32" else None  # each update is +1, 1 sample
        # Loading the task takes minutes on a busy machine.
        task.strategy = dataclasses.replace(task.strategy, connection_timeout=600)
        sampler = CPUSampler([cluster.coordinator.process.pid]
                             + [daemon.process.pid for daemon in cluster.workers.values()])
        sampler.start()
        task_id = client.create_task(task.build())
        finished = client.wait(task_id)
        sampler.done.set()
        if not finished:
            log = "\n".join(entry.message for entry in client.logs(task_id))
            raise TaskFailed(f"{mode} task failed: {client.get_task(task_id).error}\n{log}")
        assert float(client.get_result(task_id)["weights"][0]) == rounds
        logs = client.logs(task_id)
        if mode == "secure32":
            assert any("32-bit words" in entry.message for entry in logs)
        marks = [e.time for e in logs if "loaded the task" in e.message
                 or e.message.startswith("round ") and "/" in e.message.split()[1]]
    spans = list(itertools.pairwise(marks))[1:]
    return (statistics.median(b - a for a, b in spans),
            statistics.median(sampler.at(b) - sampler.at(a) for a, b in spans))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="25,100", help="millions of parameters")
    parser.add_argument("--workers", default="3,8")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{args.rounds} rounds a task, round: median of rounds 2.., wall s (CPU s); "
          f"{args.repeats} repeats, the order of the modes rotating; mutual TLS")
    print("| params | workers | repeat | order | plain | secure 64-bit | secure 32-bit "
          "| 64-bit / plain, wall (CPU) | 32-bit / plain, wall (CPU) |")
    print("|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for size in (float(s) for s in args.sizes.split(",")):
        for workers in (int(w) for w in args.workers.split(",")):
            ratios: dict[str, list[tuple[float, float]]] = {"secure64": [], "secure32": []}
            for repeat in range(args.repeats):
                order = MODES[repeat % 3:] + MODES[:repeat % 3]
                seconds = {mode: measured(int(size * 1e6), workers, args.rounds, mode)
                           for mode in order}
                plain = seconds["plain"]
                for mode, kept in ratios.items():
                    kept.append((seconds[mode][0] / plain[0], seconds[mode][1] / plain[1]))
                cells = [f"{seconds[mode][0]:.2f} ({seconds[mode][1]:.2f})" for mode in MODES]
                shown = [f"{wall:.2f} ({cpu:.2f})" for wall, cpu in
                         (ratios["secure64"][-1], ratios["secure32"][-1])]
                print(f"| {size:g}M | {workers} | {repeat + 1} | {', '.join(order)} "
                      f"| {' | '.join(cells + shown)} |", flush=True)
            medians = [f"**{statistics.median(w for w, _ in kept):.2f}** "
                       f"({statistics.median(c for _, c in kept):.2f})"
                       for kept in ratios.values()]
            print(f"| {size:g}M | {workers} | median | | | | | {' | '.join(medians)} |",
                  flush=True)


if __name__ == "__main__":
    sys.exit(main())
