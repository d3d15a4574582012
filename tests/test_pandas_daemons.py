"""The analytics examples end to end: real daemons, three workers, pandas' answers.

Each example's task is also run with real pandas on the stacked files: its execute() is plain
pandas code, so that is the answer the federated run must give back, nest, dtypes and labels.
"""

from __future__ import annotations

import importlib.util
import io

import pandas as pd

from cluster import ROOT, wages
from test_pandas import assert_same


def example(name: str):
    """A module of examples/ (they are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def start_three(cluster) -> pd.DataFrame:
    """Three workers: one holds a single row, which no `hours > 45` filter keeps. The stack."""
    cluster.start_coordinator()
    one_row = pd.DataFrame({"age": [61], "wage": [4200.5], "hours": [38.5]})
    for name, table in {"w1": wages(40, 1), "w2": one_row, "w3": wages(25, 3)}.items():
        # --min-rows 1: these tests check exactness down to a single row, which a worker's
        # default (3) would count as empty.
        cluster.start_worker(name, {"wages.csv": table}, False, "--min-rows", "1")
    for name in ("w1", "w2", "w3"):
        cluster.wait_connected(name)
    files = [cluster.data_dir(name) / "wages.csv" for name in ("w1", "w2", "w3")]
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True)


def run(cluster, task) -> tuple[object, str]:
    client = cluster.client()
    task_id = client.create_task(task.build())
    log = io.StringIO()
    assert client.trace(task_id, out=log), log.getvalue()
    return client.get_result(task_id), log.getvalue()


def test_a_three_round_graph_with_several_outputs_and_filters(cluster):
    stacked = start_three(cluster)
    report = example("analytics_several_outputs").WageReport()
    result, log = run(cluster, report)
    assert "3 step(s) to compute" in log
    assert_same(result, report.execute(stacked))
    long_hours = example("analytics_filter").LongHours()
    result, _ = run(cluster, long_hours)
    expected = long_hours.execute(stacked)
    expected["wages missing, by age"] = expected["wages missing, by age"][["count", "mean", "std"]]
    assert_same(result, expected)


def test_groupby_gives_every_key_of_any_worker_sorted(cluster):
    stacked = start_three(cluster)
    task = example("analytics_groupby").WagesByDecade()
    result, _ = run(cluster, task)
    expected = task.execute(stacked.copy())
    assert_same(result, expected)
    assert list(result["people"].index) == sorted(set(stacked.age // 10 * 10))
    statistics = example("analytics_statistics").WageStatistics()  # the same cluster, secure
    result, log = run(cluster, statistics)
    assert "secure aggregation: on" in log and "2 step(s) to compute" in log
    expected = statistics.execute(stacked.copy())
    counts = expected["people per decade"]  # ties in order of value, not of first appearance
    expected["people per decade"] = counts.sort_index().sort_values(ascending=False,
                                                                     kind="stable")
    assert_same(result, expected, atol=1e-6)  # fixed point: 9 decimal digits
    assert result["wage by decade and hours"].index.names == ["decade", "long_hours"]
