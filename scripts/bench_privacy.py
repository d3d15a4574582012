"""What differential privacy costs: the relative error of a mean, a variance and a groupby mean
for epsilon 0.1, 1 and 10 (each task spending the whole budget on one statistic), and the time
from create_task to the result beside the same task without DP. Three local workers with
mutual TLS and secure aggregation, 10k rows each (deltaflow.samples.wages).

Then DP-FedAvg's accuracy and time beside plain FedAvg (scripts/bench_dp_fedavg.py, which runs
alone with more options), unless --analytics-only.

Usage: python scripts/bench_privacy.py [--repeats 3] [--rows 10000] [--analytics-only]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd  # noqa: E402

from deltaflow.localcluster import LocalCluster  # noqa: E402
from deltaflow.samples import wages  # noqa: E402
from sdk import dataset  # noqa: E402
from sdk.client import Client  # noqa: E402
from sdk.privacy import DifferentialPrivacy  # noqa: E402
from sdk.task import HorizontalAnalytics  # noqa: E402

EPSILONS = (0.1, 1.0, 10.0)
DELTA = 1e-6
BANDS = [2, 3, 4, 5, 6]  # age // 10: the groupby's declared keys


def _clipped(d: Any) -> Any:
    return d.assign(wage=d.wage.clip(0, 20_000))


STATISTICS: dict[str, Callable[[Any], Any]] = {
    "mean": lambda d: d.wage.clip(0, 20_000).mean(),
    "variance": lambda d: d.wage.clip(0, 20_000).var(),
    "groupby mean": lambda d: _clipped(d).groupby(d.age // 10, keys=BANDS).wage.mean(),
}


class Statistic(HorizontalAnalytics):
    def __init__(self, body: Callable[[Any], Any], epsilon: float | None) -> None:
        super().__init__(name="bench_privacy", min_clients=3, max_clients=3, wait_timeout=60,
                         connection_timeout=60,
                         privacy=DifferentialPrivacy(epsilon, DELTA) if epsilon else None)
        self.body = body

    def dataset(self):
        return {"d": dataset.DataFrame("wages.csv")}

    def execute(self, d):
        return self.body(d)


@dataclass(frozen=True)
class Row:
    """One line of the table: a task under DP beside the same task without."""

    task: str
    epsilon: float
    relative_error: float  # the mean over repeats of |released - exact| / |exact|
    seconds: float  # median create_task -> result
    plain_seconds: float  # the same without DP


def analytics_rows(client: Client, repeats: int) -> list[Row]:
    rows = []
    for name, body in STATISTICS.items():
        exact, plain = _timed(client, Statistic(body, None), repeats)
        for epsilon in EPSILONS:
            released, seconds = _timed(client, Statistic(body, epsilon), repeats)
            errors = [_relative_error(r, exact[0]) for r in released]
            rows.append(Row(name, epsilon, statistics.mean(errors), seconds, plain))
    return rows


def _timed(client: Client, task: HorizontalAnalytics, repeats: int) -> tuple[list[Any], float]:
    """The results of `repeats` runs of the task and their median latency."""
    built = task.build()
    results, latencies = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        task_id = client.create_task(built)
        if not client.wait(task_id):
            raise SystemExit(f"task {task_id} failed: {client.get_task(task_id).error}")
        results.append(client.get_result(task_id))
        latencies.append(time.perf_counter() - started)
    return results, statistics.median(latencies)


def _relative_error(released: Any, exact: Any) -> float:
    """|released - exact| / |exact|; over a groupby's keys, their mean."""
    if isinstance(exact, pd.Series):
        return float(((released - exact).abs() / exact.abs()).mean())
    return abs(released - exact) / abs(exact)


def print_table(rows: list[Row], repeats: int, holder_rows: int) -> None:
    print(f"3 holders x {holder_rows} rows, mutual TLS, secure aggregation; delta {DELTA:g}; "
          f"{repeats} runs of each task (error: mean over runs; time: median)")
    print("| task | epsilon | relative error | DP s | without DP s | DP / without |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row.task} | {row.epsilon:g} | {row.relative_error:.2e} | {row.seconds:.3f} "
              f"| {row.plain_seconds:.3f} | {row.seconds / row.plain_seconds:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=10_000, help="rows per holder")
    parser.add_argument("--analytics-only", action="store_true",
                        help="leave out DP-FedAvg's table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, LocalCluster(Path(folder)) as cluster:
        cluster.start_coordinator()
        for i in range(3):
            cluster.start_worker(f"w{i}", {"wages.csv": wages(args.rows, seed=i)})
        client = cluster.client()
        _timed(client, Statistic(STATISTICS["mean"], 1.0), 1)  # warm-up: dp-accounting's import
        rows = analytics_rows(client, args.repeats)
    print_table(rows, args.repeats, args.rows)
    if not args.analytics_only:
        import bench_dp_fedavg  # beside this script

        bench_dp_fedavg.main([])


if __name__ == "__main__":
    main()
