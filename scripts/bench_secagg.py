"""Secure aggregation's cost: per phase with the workers simulated in one process, and end to end
over real daemons.

Crypto table: for n workers and vectors of v float32 values, each phase's time (worker phases:
the mean of one worker, as workers run in parallel; coordinator phases: its own time), against
plain aggregation, the coordinator's weighted sum of the n float32 vectors in memory, as
FedAvg's fold does it. Each figure is the best of --repeat runs.

Scaling table: Bonawitz's protocol against SecAgg+ (sdk/secagg/graph.py) for --plus-workers
workers summing vectors of --plus-size values: each worker's cost (the mean over workers, all
phases), the coordinator's, and how many peers each worker masks and shares with. Where Bonawitz's round is too slow
to run whole in one process (--bonawitz-max), its costs are estimated from measured steps: one
worker's share_keys over all n, its masked vector with n seeds, and one reconstruction at the
threshold times n (the unmasking without dropouts), which leaves out relaying and routing: a
lower bound; the table marks those.

End-to-end table: a FedAvg round over local worker daemons (trivial training, see
bench_learning.py) with secure aggregation on and off, and the ratio.

Usage: python scripts/bench_secagg.py [--workers 3 10 30] [--sizes 1000000 25000000]
                                      [--repeat 3] [--plus-workers 100 1000]
                                      [--plus-size 10000] [--e2e-workers 3 10]
                                      [--e2e-size 1000000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sdk.secagg import Rule, SecAggClient, accumulate, graph, shamir  # noqa: E402
from sdk.secagg.fixedpoint import decode, encode  # noqa: E402
from sdk.secagg.local import run_local  # noqa: E402

PRECISION = 6
PHASES = ("advertise", "share", "check", "mask", "unmask")


class Clock:
    """Seconds spent per (role, phase), accumulated over calls."""

    def __init__(self):
        self.seconds: dict[tuple[str, str], float] = {}

    def __call__(self, role: str, phase: str, fn, *args):
        start = time.perf_counter()
        out = fn(*args)
        key = (role, phase)
        self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - start
        return out


def secure_round(n: int, x: np.ndarray) -> dict[str, float]:
    """One round of n workers all sending `x`; seconds per phase (worker: mean, plus the
    coordinator's). Encoding into fixed point counts as the worker's masking."""
    clock = Clock()
    vectors = {u: clock("worker", "mask", encode, x, PRECISION, n) for u in range(n)}
    _, total = run_local(vectors, Rule(max(2, n // 2)), timed=clock)
    np.testing.assert_allclose(decode(total, PRECISION), n * x.astype(np.float64), rtol=0,
                               atol=n * 10**-PRECISION)
    return {phase: clock.seconds.get(("worker", phase), 0.0) / n
            + clock.seconds.get(("coordinator", phase), 0.0) for phase in PHASES}


def plain_round(n: int, x: np.ndarray) -> float:
    """Seconds for the coordinator to fold n float32 vectors into a weighted sum."""
    start = time.perf_counter()
    total, scaled = np.zeros_like(x), np.empty_like(x)
    for samples in range(1, n + 1):
        np.multiply(x, np.float32(samples), out=scaled)
        total += scaled
    return time.perf_counter() - start


def crypto_table(workers: list[int], sizes: list[int], repeat: int) -> None:
    print("| workers | values | " + " | ".join(f"{p} ms" for p in PHASES)
          + " | secure ms | plain ms | ratio |")
    print("|---" * (len(PHASES) + 5) + "|")
    for size in sizes:
        x = np.random.default_rng(0).normal(0, 1, size).astype(np.float32).round(3)
        for n in workers:
            runs = [secure_round(n, x) for _ in range(repeat)]
            seconds = {p: min(run[p] for run in runs) for p in PHASES}
            secure = sum(seconds.values())
            plain = min(plain_round(n, x) for _ in range(repeat))
            print(f"| {n} | {size:,} | " + " | ".join(f"{seconds[p] * 1e3:.1f}" for p in PHASES)
                  + f" | {secure * 1e3:.1f} | {plain * 1e3:.1f} | {secure / plain:.1f}x |",
                  flush=True)


def measured_round(n: int, x: np.ndarray, plus_above: int) -> tuple[float, float]:
    """One whole in-process round of n workers (min_clients 2): seconds per worker (the mean)
    and the coordinator's."""
    clock = Clock()
    vectors = {u: encode(x, PRECISION, n) for u in range(n)}
    _, total = run_local(vectors, Rule(2, plus_above), timed=clock)
    np.testing.assert_allclose(decode(total, PRECISION), n * x.astype(np.float64), rtol=0,
                               atol=n * 10**-PRECISION)
    worker = sum(s for (role, _), s in clock.seconds.items() if role == "worker")
    return worker / n, sum(s for (role, _), s in clock.seconds.items() if role == "coordinator")


def estimated_bonawitz(n: int, x: np.ndarray) -> tuple[float, float]:
    """Bonawitz's per-worker and coordinator seconds for n workers, from measured steps: one
    worker's share_keys to all n (its check phase, as many decryptions, counted alike), its
    masked vector with n seeds, and n reconstructions at the threshold."""
    clients = [SecAggClient(u, Rule(2), n) for u in range(n)]
    keys = {u: c.advertise() for u, c in enumerate(clients)}
    start = time.perf_counter()
    clients[0].share_keys(keys)
    share = time.perf_counter() - start
    seeds = [(bytes(32 - len(str(u))) + str(u).encode(), 1) for u in range(n)]
    masked = encode(x, PRECISION, n)
    start = time.perf_counter()
    accumulate(masked, [], seeds)
    mask = time.perf_counter() - start
    t = Rule(2).threshold(n)
    shares = shamir.split(bytes(32), list(range(t)), t)
    start = time.perf_counter()
    shamir.combine(shares)
    combine = time.perf_counter() - start
    start = time.perf_counter()
    accumulate(np.zeros(x.size, dtype=np.uint64), [], seeds)  # taking the self masks off
    unmask = time.perf_counter() - start
    return 2 * share + mask, n * combine + unmask


def plus_table(workers: list[int], size: int, bonawitz_max: int) -> None:
    x = np.random.default_rng(0).normal(0, 1, size).astype(np.float32).round(3)
    print("\n| workers | values | protocol | peers per worker | threshold | worker ms "
          "| coordinator ms |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    for n in workers:
        for name, plus_above in (("Bonawitz", 0), ("SecAgg+", 1)):
            if plus_above or n <= bonawitz_max:
                worker, coordinator = measured_round(n, x, plus_above)
                how = ""
            else:
                worker, coordinator = estimated_bonawitz(n, x)
                how = " (estimated: a lower bound)"
            peers = graph.degree(n) if plus_above else n - 1
            t = Rule(2, plus_above).threshold(n)
            print(f"| {n:,} | {size:,} | {name}{how} | {peers} | {t} "
                  f"| {worker * 1e3:.1f} | {coordinator * 1e3:.1f} |", flush=True)


def end_to_end_table(workers: list[int], size: int, rounds: int) -> None:
    from bench_learning import run_task

    print("\n| workers | params | plain round s | secure round s | ratio |")
    print("|---:|---:|---:|---:|---:|")
    for n in workers:
        plain, _ = run_task(size, n, rounds, secure=False)
        secure, _ = run_task(size, n, rounds, secure=True)
        print(f"| {n} | {size:,} | {plain:.3f} | {secure:.3f} | {secure / plain:.2f}x |",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="*", default=[3, 10, 30])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1_000_000, 25_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--plus-workers", type=int, nargs="*", default=[100, 1000])
    parser.add_argument("--plus-size", type=int, default=10_000)
    parser.add_argument("--bonawitz-max", type=int, default=300,
                        help="above this, Bonawitz's costs are estimated from measured steps")
    parser.add_argument("--e2e-workers", type=int, nargs="*", default=[3, 10])
    parser.add_argument("--e2e-size", type=int, default=1_000_000)
    parser.add_argument("--e2e-rounds", type=int, default=4)
    args = parser.parse_args()
    if args.workers and args.sizes:
        crypto_table(args.workers, args.sizes, args.repeat)
    if args.plus_workers:
        plus_table(args.plus_workers, args.plus_size, args.bonawitz_max)
    if args.e2e_workers:
        end_to_end_table(args.e2e_workers, args.e2e_size, args.e2e_rounds)


if __name__ == "__main__":
    main()
