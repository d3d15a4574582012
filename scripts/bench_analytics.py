"""Analytics over local workers, mutual TLS:

1. Latency of a small task (WageAvg), from create_task to its result, over three workers, with
   mutual TLS and without (--insecure), and the CPU time each side spends per task.
2. Rows per second for a 5-column mean over a table of --source-rows rows (10M by default) kept
   as a CSV file, a Parquet file and a PostgreSQL table (a throw-away server, as the tests start
   one; scripts/setup.sh installs PostgreSQL), beside pandas reading the CSV (and the Parquet
   file) whole and computing the same on this machine; with each worker's peak RSS. A task
   needs two workers: each source's table is held by one worker, whose time is the task's,
   beside a second holding 1,000 rows under the same name.
3. A median's latency over 3 holders of --median-rows rows each (1M by default), whose
   policies reveal order statistics, through secure aggregation.

Usage: python scripts/bench_analytics.py [--runs 30] [--rows 10000] [--tls both|on|off]
                                         [--source-rows 10000000] [--source-repeats 5]
                                         [--median-rows 1000000]
(a value of 0 skips that table)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "tests"))  # the throw-away PostgreSQL server of the tests

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from deltaflow.localcluster import LocalCluster  # noqa: E402
from deltaflow.samples import wages  # noqa: E402
from sdk import dataset  # noqa: E402
from sdk.client import Client  # noqa: E402
from sdk.task import HorizontalAnalytics  # noqa: E402
from wage_avg import WageAvg  # noqa: E402

COLUMNS = ["a", "b", "c", "d", "e"]
SMALL_ROWS = 1_000  # the second holder's rows, where one holder's speed is measured
READER_PASSWORD = "bench-reader-pw"
REVEALING = """\
[analytics]
users = ["*"]
reveal_order_statistics = true
"""


class FiveColumnMean(HorizontalAnalytics):
    """The mean of five float columns of the source named `source`."""

    def __init__(self, source: str, clients: int = 2) -> None:
        super().__init__(name="five_column_mean", min_clients=clients, max_clients=clients,
                         wait_timeout=1800, connection_timeout=60)
        self.source = source

    def dataset(self):
        return {"d": dataset.DataFrame(self.source)}

    def execute(self, d):
        return d[COLUMNS].mean()


class Median(FiveColumnMean):
    def execute(self, d):
        return d.a.median()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--rows", type=int, default=10_000, help="rows per worker")
    parser.add_argument("--tls", choices=("both", "on", "off"), default="both",
                        help="mutual TLS with a throw-away federation, --insecure, or both")
    parser.add_argument("--source-rows", type=int, default=10_000_000,
                        help="rows of the table each kind of source holds (0: skip)")
    parser.add_argument("--source-repeats", type=int, default=5,
                        help="runs of each source's task and of pandas, their median shown")
    parser.add_argument("--median-rows", type=int, default=1_000_000,
                        help="rows of each of the median's 3 holders (0: skip)")
    args = parser.parse_args()
    if args.runs:
        small_tasks(args)
    if args.source_rows:
        sources_table(args.source_rows, args.source_repeats)
    if args.median_rows:
        median_table(args.median_rows)


def small_tasks(args: argparse.Namespace) -> None:
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


def frame(rows: int, seed: int) -> Any:
    """A pandas DataFrame of `rows` rows of COLUMNS."""
    import pandas as pd
    random = np.random.default_rng(seed)
    return pd.DataFrame({c: random.normal(100, 15, rows).round(4) for c in COLUMNS})


def write_sources(folder: Path, rows: int, seed: int) -> tuple[Path, Path, Path]:
    """The same `rows` as a CSV file, a Parquet file (pyarrow's defaults: snappy) and an
    uncompressed Parquet file in `folder`."""
    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.parquet
    table = pa.Table.from_pandas(frame(rows, seed), preserve_index=False)
    csv, parquet, plain = folder / "t.csv", folder / "t.parquet", folder / "u.parquet"
    pyarrow.csv.write_csv(table, csv)
    pyarrow.parquet.write_table(table, parquet)
    pyarrow.parquet.write_table(table, plain, compression="none")
    return csv, parquet, plain


def load_postgres(server, csv: Path, table: str) -> None:
    """`table` in `server`, COPYed from `csv`, readable by a `reader` role."""
    columns = ", ".join(f"{c} double precision" for c in COLUMNS)
    server.admin(f"CREATE TABLE {table} ({columns})")
    connection = server.engine().raw_connection()
    try:
        with connection.cursor() as cursor, open(csv, "rb") as source:
            with cursor.copy(f"COPY {table} FROM STDIN (FORMAT csv, HEADER true)") as copy:
                while block := source.read(1 << 20):
                    copy.write(block)
        connection.commit()
    finally:
        connection.close()
    server.admin(f"GRANT SELECT ON {table} TO PUBLIC", f"ANALYZE {table}")


def sources_table(rows: int, repeats: int) -> None:
    from postgres import Postgres
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        made = time.perf_counter()
        (root / "big").mkdir()
        (root / "small").mkdir()
        big = write_sources(root / "big", rows, 0)
        small = write_sources(root / "small", SMALL_ROWS, 1)
        server = Postgres()
        try:
            load_postgres(server, big[0], "t_big")
            load_postgres(server, small[0], "t_small")
            server.admin(f"CREATE ROLE reader LOGIN PASSWORD '{READER_PASSWORD}'")
            print(f"\n{rows:,} rows of {len(COLUMNS)} float64 columns: CSV "
                  f"{big[0].stat().st_size / 2**20:,.0f} MiB, Parquet "
                  f"{big[1].stat().st_size / 2**20:,.0f} MiB, and a PostgreSQL table (made in "
                  f"{time.perf_counter() - made:.0f} s)")
            measured = _measure_sources(root / "cluster", server, big, small, repeats)
        finally:
            server.stop()
        baselines = {kind: _pandas_baseline(path, kind, repeats)
                     for kind, path in (("csv", big[0]), ("parquet", big[1]))}
    reference = rows / baselines["csv"][0]
    print(f"Medians of {repeats} runs each (the machine's speed varies by 2x from run to run); a "
          "task's time is create_task to result over mutual TLS, its rows those of the holder "
          f"of {rows:,} (beside one of {SMALL_ROWS:,}); pandas reads the whole file in a fresh "
          "child of this process and takes the same mean.\n")
    print("| source | how | s | rows/s | rows/s / pandas read_csv + mean | peak RSS MiB |")
    print("|---|---|---:|---:|---:|---:|")
    for kind, (seconds, rss) in measured.items():
        print(f"| {kind} | deltaflow worker | {seconds:.2f} | {rows / seconds:,.0f} "
              f"| {rows / seconds / reference:.2f} | {rss:,.0f} |")
    for kind, (seconds, rss) in baselines.items():
        how = "pandas read_csv + mean" if kind == "csv" else "pandas read_parquet + mean"
        print(f"| {kind} | {how} | {seconds:.2f} | {rows / seconds:,.0f} "
              f"| {rows / seconds / reference:.2f} | {rss:,.0f} |")
    print("\nTargets: Parquet at least 2x pandas' read_csv + mean in rows/s; a worker's peak "
          "RSS under 500 MB whatever the table's size.")


def _measure_sources(root: Path, server, big: tuple[Path, ...], small: tuple[Path, ...],
                     repeats: int) -> dict[str, tuple[float, float]]:
    """Median seconds of each kind's task and its big holder's peak RSS (MiB)."""
    measured = {}
    with LocalCluster(root) as cluster:
        cluster.start_coordinator()
        for size, (csv, parquet, plain) in (("big", big), ("small", small)):
            entries = {"csv": f'path = "{csv.name}"', "parquet": f'path = "{parquet.name}"',
                       "parquet-uncompressed": f'path = "{plain.name}"',
                       "postgresql": (f'url = "{server.url("reader")}"\npassword_env = '
                                      f'"READER_PW"\ntable = "t_{size}"')}
            for kind, entry in entries.items():
                name = f"{kind}-{size}"
                data = cluster.data_dir(name)
                for path in (csv, parquet, plain):
                    os.link(path, data / path.name)
                sources = cluster.root / f"sources-{name}.toml"
                sources.write_text(f"[sources.{_source(kind)}]\n{entry}\n")
                cluster.start_worker(name, None, False, "--sources", str(sources),
                                     env={"READER_PW": READER_PASSWORD})
        for name in list(cluster.workers):
            cluster.wait_connected(name)
        client = cluster.client()
        times: dict[str, list[float]] = {}
        for _ in range(repeats):  # each kind in turn, so that a slow spell hits all of them
            for kind in ("csv", "parquet", "parquet-uncompressed", "postgresql"):
                started = time.perf_counter()
                result = client.get_result(_run(client, FiveColumnMean(_source(kind)).build()))
                times.setdefault(kind, []).append(time.perf_counter() - started)
                if not np.isfinite(np.asarray(result, dtype=float)).all():
                    raise SystemExit(f"the {kind} mean is not a number: {result}")
        for kind, seconds in times.items():
            measured[kind] = (statistics.median(seconds),
                              _peak_rss(cluster.workers[f"{kind}-big"].process.pid))
    return measured


def _source(kind: str) -> str:
    return "t_" + kind.replace("-", "_")


def _peak_rss(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith("VmHWM")).split()[1]) / 1024


def _pandas_baseline(path: Path, kind: str, repeats: int) -> tuple[float, float]:
    """Median seconds for pandas to read `path` whole and take the mean, each run in a fresh
    process, and its peak RSS (MiB)."""
    code = (
        "import json, sys, time, pandas as pd\n"
        "start = time.perf_counter()\n"
        f"frame = pd.read_{kind}(sys.argv[1])\n"
        f"frame[{COLUMNS!r}].mean()\n"
        "seconds = time.perf_counter() - start\n"
        "hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
        "print(json.dumps([seconds, int(hwm.split()[1]) / 1024]))\n")
    runs = [json.loads(subprocess.run([sys.executable, "-c", code, str(path)], check=True,
                                      capture_output=True, text=True).stdout)
            for _ in range(repeats)]
    return statistics.median(s for s, _ in runs), max(rss for _, rss in runs)


def median_table(rows: int) -> None:
    """A median through secure aggregation over 3 holders of `rows` rows each."""
    import pandas as pd
    with tempfile.TemporaryDirectory() as folder, LocalCluster(Path(folder)) as cluster:
        cluster.start_coordinator()
        frames = {f"w{i}": frame(rows, i) for i in range(3)}
        for name, table in frames.items():
            cluster.start_worker(name, {"t.csv": table}, False, policy=REVEALING)
        for name in frames:
            cluster.wait_connected(name)
        client = cluster.client()
        task = Median("t.csv", clients=3)
        started = time.perf_counter()
        task_id = _run(client, task.build())
        result = client.get_result(task_id)
        seconds = time.perf_counter() - started
        expected = pd.concat(frames.values(), ignore_index=True).a.median()
        rss = max(_peak_rss(d.process.pid) for d in cluster.workers.values())
    print(f"\nA median over 3 holders of {rows:,} rows each (CSV), through secure aggregation, "
          "one run; create_task to result:\n")
    print("| rows in all | s | equal to pandas | workers' peak RSS MiB |")
    print("|---:|---:|---|---:|")
    print(f"| {3 * rows:,} | {seconds:.2f} | {result == expected} | {rss:,.0f} |")


if __name__ == "__main__":
    main()
