"""Steps pushed down to PostgreSQL beside the same steps read in chunks, over a table of
generated rows in a throw-away server (tests/postgres.py: needs PostgreSQL installed).

    .venv/bin/python scripts/bench_pushdown.py [--rows 1000000] [--chunk-rows 65536]

Each line gives a task's seconds both ways (every step of it, min_rows 3), after checking that
both give the same answer.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from postgres import ADMIN_PASSWORD, Postgres
from test_chunks import run_over
from test_pandas import assert_same

from sdk import pandas as pd
from worker.chunks import stage_parts
from worker.datasets import DataDir
from worker.sources import Catalog, parse_sources

TASKS = {
    "groupby(g).f.var()": lambda d: d.groupby("g").f.var(),
    "groupby([g, k])[[i, f]].mean()": lambda d: d.groupby(["g", "k"])[["i", "f"]].mean(),
    "k.value_counts()": lambda d: d.k.value_counts(),
    "histogram(f, 5 bins)": lambda d: pd.histogram(d.f, [0, 10, 20, 50, 80, 100]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=65_536)
    args = parser.parse_args()
    server = Postgres()
    try:
        server.admin("CREATE TABLE big AS SELECT (random() * 1000)::bigint AS i, "
                     "floor(random() * 800) / 8 AS f, (random() * 20)::int AS g, "
                     "chr(97 + (random() * 9)::int) AS k FROM generate_series(1, :rows)",
                     rows=args.rows)
        os.environ["BENCH_PUSHDOWN_PW"] = ADMIN_PASSWORD
        sources = parse_sources(f'[sources.big]\nurl = "{server.url()}"\n'
                                'password_env = "BENCH_PUSHDOWN_PW"\ntable = "big"\n')
        table = Catalog(DataDir(Path(tempfile.mkdtemp())), sources).open("big")
        print(f"| task over {args.rows:,} rows | pushed down s | in chunks s | speed-up |")
        print("|---|---:|---:|---:|")
        for name, body in TASKS.items():
            seconds, answers = {}, {}
            for pushdown in (True, False):
                start = time.perf_counter()
                answers[pushdown] = run_over(
                    body, table, 3, args.chunk_rows,
                    lambda *step: stage_parts(*step, pushdown=pushdown))  # noqa: B023
                seconds[pushdown] = time.perf_counter() - start
            assert_same(answers[True], answers[False])
            print(f"| {name} | {seconds[True]:.2f} | {seconds[False]:.2f} | "
                  f"{seconds[False] / seconds[True]:.0f}x |", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
