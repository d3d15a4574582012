"""A worker's memory over tables larger than it may hold: a mean and a groupby over CSV and
Parquet files read in chunks, in a process whose address space is capped (RLIMIT_AS) a few
times below the file's size, beside pandas reading the whole file uncapped.

    .venv/bin/python scripts/bench_sources.py [--rows 8000000] [--max-memory 96] [--chunk-rows N]

Each run is a fresh process; the table gives its peak RSS and its time. The cap is the headroom
over what the process holds once its libraries are imported (pandas, pyarrow and SQLAlchemy
reserve some 400 MB of address space before a row is read).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def task_plan():
    from sdk import dataset
    from sdk.analytics.graph import Graph
    from sdk.analytics.plan import Plan
    from sdk.task import HorizontalAnalytics

    class Bench(HorizontalAnalytics):
        def __init__(self):
            super().__init__(name="bench", min_clients=2, max_clients=2, wait_timeout=1,
                             connection_timeout=1)

        def dataset(self):
            return {"d": dataset.DataFrame("t.csv")}

        def execute(self, d):
            return d[["a", "b", "c", "e", "f"]].mean(), d.groupby("g")[["a", "b"]].mean()

    return Plan(*Graph.from_proto(Bench().build().spec.analytics))


def child(path: str, mode: str, headroom_mb: int, chunk_rows: int) -> None:
    import pandas as pd

    from worker.chunks import stage_parts
    from worker.datasets import DataDir
    from worker.sources import Catalog
    plan = task_plan()
    if headroom_mb:
        with open("/proc/self/status") as status:
            size_kb = int(next(line for line in status if line.startswith("VmSize")).split()[1])
        limit = size_kb * 1024 + headroom_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    started = time.perf_counter()
    if mode == "worker":
        table = Catalog(DataDir(Path(path).parent)).open(Path(path).name)
        stage_parts(plan, 0, {"d": table}, {}, 3, chunk_rows, pushdown=False)
    else:
        frame = pd.read_parquet(path) if path.endswith(".parquet") else pd.read_csv(path)
        frame[["a", "b", "c", "e", "f"]].mean()
        frame.groupby("g")[["a", "b"]].mean()
    seconds = time.perf_counter() - started
    with open("/proc/self/status") as status:  # ru_maxrss would count the parent's, from fork
        peak = int(next(line for line in status if line.startswith("VmHWM")).split()[1]) / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak}))


def write_tables(folder: Path, rows: int) -> dict[str, Path]:
    import numpy as np
    import pandas as pd
    random = np.random.default_rng(0)
    frame = pd.DataFrame({name: random.integers(0, 10**6, rows) / 8 for name in "abcef"})
    frame["g"] = random.integers(0, 50, rows)
    paths = {"csv": folder / "t.csv", "parquet": folder / "t.parquet"}
    frame.to_csv(paths["csv"], index=False, float_format="%.3f")
    frame.to_parquet(paths["parquet"], index=False, row_group_size=65_536)
    return paths  # the frame is freed here, before any reader starts


def run(path: Path, mode: str, headroom: int, chunk_rows: int) -> dict[str, float] | str:
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "1",
           "ARROW_DEFAULT_MEMORY_POOL": "system"}
    try:
        done = subprocess.run([sys.executable, __file__, "--child", str(path), mode,
                               str(headroom), str(chunk_rows)], capture_output=True, text=True,
                              env=env, cwd=ROOT, timeout=60)
    except subprocess.TimeoutExpired:
        return "failed (no answer in 60 s)"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return f"failed ({last[:40]})"
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8_000_000)
    parser.add_argument("--max-memory", type=int, default=96,
                        help="MB of address space the worker may add to its libraries'")
    parser.add_argument("--chunk-rows", type=int, default=65_536)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]), int(args.child[3]))
        return
    with tempfile.TemporaryDirectory() as folder:
        paths = write_tables(Path(folder), args.rows)
        print(f"{args.rows:,} rows, 6 columns; worker capped at {args.max_memory} MB over its "
              f"libraries, {args.chunk_rows:,} rows a chunk\n")
        print(f"{'format':8} {'file MB':>8} {'reader':28} {'peak RSS MB':>12} {'seconds':>8} "
              f"{'rows/s':>11}")
        for fmt, path in paths.items():
            size = path.stat().st_size / 2**20
            for mode, cap in (("worker", 0), ("worker", args.max_memory), ("pandas", 0),
                              ("pandas", args.max_memory)):
                label = ("worker, chunks, " if mode == "worker" else "pandas whole, ") + (
                    "capped" if cap else "uncapped")
                result = run(path, mode, cap, args.chunk_rows)
                if isinstance(result, str):
                    print(f"{fmt:8} {size:8.0f} {label:28} {result:>33}")
                    continue
                print(f"{fmt:8} {size:8.0f} {label:28} {result['peak_mb']:12.0f} "
                      f"{result['seconds']:8.2f} {args.rows / result['seconds']:11,.0f}")


if __name__ == "__main__":
    main()
