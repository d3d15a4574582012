"""Secure aggregation's cost per phase against plain aggregation (a sum of float32 vectors), with
all workers simulated in one process. Worker phases are the mean time of one worker (workers run
in parallel); server phases are the coordinator's time. Each figure is the best of --repeat runs.

Usage: python scripts/bench_secagg.py [--workers 3 10 30] [--sizes 1000000 25000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sdk.secagg import SecAggClient, SecAggServer, threshold  # noqa: E402

PRECISION = 6


class Clock:
    """Seconds spent per phase, accumulated over calls."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def time(self, phase: str, fn, *args):
        start = time.perf_counter()
        out = fn(*args)
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start
        return out


def secure_round(n: int, x: np.ndarray) -> dict[str, float]:
    """One round of n workers all sending `x`; returns seconds per phase (workers: mean)."""
    min_clients = max(2, n // 2)
    t = threshold(min_clients, n)
    clients = [SecAggClient(u, n, t, PRECISION, x.size) for u in range(n)]
    server = SecAggServer(n, min_clients, PRECISION, x.size)
    workers, coordinator = Clock(), Clock()
    for c in clients:
        server.receive_keys(c.index, *workers.time("advertise", c.advertise))
    keys = coordinator.time("advertise", server.public_keys)
    for c in clients:
        coordinator.time("share", server.receive_shares, c.index,
                         workers.time("share", c.share_keys, keys))
    routed = coordinator.time("share", server.routed_shares)
    for c in clients:
        vector, malformed = workers.time("mask", c.masked_input, x, routed[c.index])
        coordinator.time("mask", server.receive_masked, c.index, vector, malformed)
    survivors = coordinator.time("mask", server.unmask_request)
    for c in clients:
        coordinator.time("unmask", server.receive_unmask, c.index,
                         workers.time("unmask", c.unmask, survivors))
    total = coordinator.time("unmask", server.result)
    np.testing.assert_allclose(total, n * x.astype(np.float64), rtol=0, atol=n * 10**-PRECISION)
    return {phase: workers.seconds[phase] / n + coordinator.seconds[phase]
            for phase in workers.seconds}


def plain_round(n: int, x: np.ndarray) -> float:
    """Seconds for the coordinator to sum n float32 vectors."""
    start = time.perf_counter()
    total = np.zeros_like(x)
    for _ in range(n):
        total += x
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[3, 10, 30])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 25_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    phases = ("advertise", "share", "mask", "unmask")
    print("| workers | values | " + " | ".join(f"{p} ms" for p in phases)
          + " | secure ms | plain ms | ratio |")
    print("|---" * (len(phases) + 5) + "|")
    for size in args.sizes:
        x = np.random.default_rng(0).normal(0, 1, size).astype(np.float32).round(3)
        for n in args.workers:
            runs = [secure_round(n, x) for _ in range(args.repeat)]
            seconds = {p: min(run[p] for run in runs) for p in phases}
            secure = sum(seconds.values())
            plain = min(plain_round(n, x) for _ in range(args.repeat))
            print(f"| {n} | {size:,} | " + " | ".join(f"{seconds[p] * 1e3:.1f}" for p in phases)
                  + f" | {secure * 1e3:.1f} | {plain * 1e3:.1f} | {secure / plain:.1f}x |",
                  flush=True)


if __name__ == "__main__":
    main()
