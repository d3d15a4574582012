"""The demo: a coordinator and three workers on 127.0.0.1 with generated wages.csv files,
running the WageAvg task and printing its trace and result beside pandas' own answer."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

from deltaflow.localcluster import LocalCluster  # noqa: E402
from deltaflow.samples import wages  # noqa: E402
from wage_avg import main as run_wage_avg  # noqa: E402


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="deltaflow-demo-") as folder:
        with LocalCluster(Path(folder)) as cluster:
            address = cluster.start_coordinator()
            print(f"coordinator on {address}, state and logs in {folder}")
            tables = {f"hospital-{i}": wages(rows, seed=i) for i, rows in enumerate((120, 80, 45))}
            for name, table in tables.items():
                cluster.start_worker(name, {"wages.csv": table})
                print(f"worker {name}: {len(table)} rows in {cluster.data_dir(name) / 'wages.csv'}")
            print()
            status = run_wage_avg(address)
            print("\npandas on the stacked files, for comparison (no deltaflow involved):")
            print(pd.concat(tables.values(), ignore_index=True).mean())
            return status


if __name__ == "__main__":
    sys.exit(main())
