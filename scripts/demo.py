"""The demo: a throw-away federation (a CA and a kit for each participant, in a temporary
folder), its coordinator and three workers on 127.0.0.1 over mutual TLS with generated data
files, running the WageAvg task as the analyst alice (its trace and result beside pandas' own
answer), then a short federated training of a PyTorch model with FedAvg."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

from deltaflow.localcluster import LocalCluster  # noqa: E402
import numpy as np  # noqa: E402

from deltaflow.samples import regression, wages  # noqa: E402
from learning_regression import main as run_regression  # noqa: E402
from wage_avg import main as run_wage_avg  # noqa: E402


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="deltaflow-demo-") as folder:
        with LocalCluster(Path(folder)) as cluster:
            address = cluster.start_coordinator()
            os.environ["DELTAFLOW_KIT"] = str(cluster.kit("alice"))  # the examples' Client
            print(f"federation in {cluster.federation}: its CA, and a kit per participant")
            print(f"coordinator on {address} (mutual TLS), state and logs in {folder}")
            tables = {f"hospital-{i}": wages(rows, seed=i) for i, rows in enumerate((120, 80, 45))}
            for seed, (name, table) in enumerate(tables.items()):
                np.savez(cluster.data_dir(name) / "regression.npz", **regression(len(table), seed))
                cluster.start_worker(name, {"wages.csv": table})
                print(f"worker {name}: wages.csv ({len(table)} rows) and regression.npz "
                      f"in {cluster.data_dir(name)}")
            print("\n== Federated analytics: WageAvg ==")
            status = run_wage_avg(address)
            print("\npandas on the stacked files, for comparison (no deltaflow involved):")
            print(pd.concat(tables.values(), ignore_index=True).mean())
            print("\n== Federated learning: FedAvg on a PyTorch model ==")
            return status or run_regression(address)


if __name__ == "__main__":
    sys.exit(main())
