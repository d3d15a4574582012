"""Data where holders keep it, over real daemons: one task names `visits`, which one holder maps
to a PostgreSQL table, one to a Parquet file and one to a CSV file; the answer is pandas' own on
the stacked rows, and the database was asked for aggregates, not rows."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import sqlalchemy as sa

from cluster import log_text
from postgres import Postgres
from sdk import dataset
from sdk.task import HorizontalAnalytics
from test_pandas import assert_same

PASSWORD = "visits-pw-61d0"


class VisitStats(HorizontalAnalytics):
    def __init__(self):
        super().__init__(name="visit_stats", min_clients=3, max_clients=3, wait_timeout=30,
                         connection_timeout=30)

    def dataset(self):
        return {"d": dataset.DataFrame("visits")}

    def execute(self, d):
        return {"mean": d[["age", "cost"]].mean(), "by_city": d.groupby("city").cost.sum(),
                "spread": d[d.age > 30].cost.var(), "people": d.groupby("city").size()}


class VisitMeans(VisitStats):
    def execute(self, d):
        return d[["age", "cost"]].mean(), d.cost.sum()


def visits(rows: int, seed: int) -> pd.DataFrame:
    random = np.random.default_rng(seed)
    return pd.DataFrame({"age": random.integers(18, 90, rows),
                         "cost": random.integers(0, 8000, rows) / 8,
                         "city": random.choice(["Brest", "Lyon", "Nice"], rows)})


def sources_file(cluster, name: str, text: str) -> str:
    path = cluster.root / f"sources-{name}.toml"
    path.write_text(text)
    return str(path)


def test_a_postgresql_table_a_parquet_file_and_a_csv_file_under_one_name(cluster):
    server = Postgres()
    try:
        frames = {"w1": visits(40, 1), "w2": visits(30, 2), "w3": visits(25, 3)}
        server.load("visits", frames["w1"], {"age": sa.BigInteger, "cost": sa.Double,
                                             "city": sa.Text})
        server.admin(f"CREATE ROLE reader LOGIN PASSWORD '{PASSWORD}'")
        (cluster.data_dir("w2") / "exports").mkdir()
        frames["w2"].to_parquet(cluster.data_dir("w2") / "exports" / "visits.parquet",
                                index=False)
        frames["w3"].to_csv(cluster.data_dir("w3") / "visits.csv", index=False)
        cluster.start_coordinator()
        database = (f'[sources.visits]\nurl = "{server.url("reader")}"\n'
                    'password_env = "VISITS_PW"\ntable = "visits"\n')
        files = {"w2": '[sources.visits]\npath = "exports/visits.parquet"\n',
                 "w3": '[sources.visits]\npath = "visits.csv"\n'}
        cluster.start_worker("w1", None, False, "--sources", sources_file(cluster, "w1", database),
                             env={"VISITS_PW": PASSWORD})
        for name, text in files.items():
            cluster.start_worker(name, None, False, "--sources", sources_file(cluster, name, text),
                                 "--chunk-rows", "7")
        for name in ("w1", "w2", "w3"):
            cluster.wait_connected(name)
        client = cluster.client()
        statements = len(server.log())
        task = VisitStats()
        task_id = client.create_task(task.build())
        log = io.StringIO()
        assert client.trace(task_id, out=log), log.getvalue()
        stacked = pd.concat(frames.values(), ignore_index=True)
        assert_same(client.get_result(task_id), task.execute(stacked))
        sent = server.log()[statements:]
        assert "GROUP BY" in sent and "sum(" in sent  # aggregates, pushed down
        assert "pushed down to its database" in cluster.workers["w1"].log()
        assert "reduced in Arrow" not in cluster.workers["w2"].log()  # groups and a filter

        task = VisitMeans()  # sums and counts only: the Parquet holder reduces them in Arrow
        task_id = client.create_task(task.build())
        assert client.trace(task_id, out=log), log.getvalue()
        assert_same(client.get_result(task_id), task.execute(stacked))
        assert "step 1 over 'visits': reduced in Arrow" in cluster.workers["w2"].log()

        # A holder whose database refuses its password: a sentence, never the password.
        cluster.workers["w1"].stop()
        wrong = "wrong-pw-3e77"
        cluster.start_worker("w4", None, True, "--sources", sources_file(cluster, "w4", database),
                             env={"VISITS_PW": wrong})
        task_id = client.create_task(VisitStats().build())
        assert client.wait(task_id) is False
        text = log_text(client, task_id)
        assert "worker w4: source 'visits': cannot connect to its database" in text, text
        everything = text + cluster.workers["w4"].log() + cluster.coordinator.log()
        assert wrong not in everything and PASSWORD not in everything
    finally:
        server.stop()


class ColumnMeans(HorizontalAnalytics):
    def __init__(self):
        super().__init__(name="column_means", min_clients=2, max_clients=2, wait_timeout=120,
                         connection_timeout=30)

    def dataset(self):
        return {"d": dataset.DataFrame("big.csv")}

    def execute(self, d):
        return d.mean(), d.groupby("g").x0.var()


def _peak_rss(pid: int) -> int:
    """A process's peak resident set (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmHWM"))
    return int(line.split()[1]) * 1024


def test_a_workers_peak_memory_is_the_chunks_not_the_tables(cluster):
    """Two workers read a CSV in chunks of 20,000 rows, one the other's four times over: their
    peaks differ by less than half the 32 MB of floats w4's three extra copies hold (read
    whole, w4 peaked 94 MB above w1; in chunks, 2 MB)."""
    random = np.random.default_rng(0)
    rows = 150_000
    one = pd.DataFrame({f"x{i}": random.normal(size=rows) for i in range(8)})
    one["g"] = random.integers(0, 4, rows)
    text = one.to_csv(index=False)
    header, body = text.split("\n", 1)
    for name, copies in (("w1", 1), ("w4", 4)):
        (cluster.data_dir(name) / "big.csv").write_text(header + "\n" + body * copies)
    cluster.start_coordinator()
    for name in ("w1", "w4"):
        cluster.start_worker(name, None, True, "--chunk-rows", "20000")
    client = cluster.client()
    task_id = client.create_task(ColumnMeans().build())
    assert client.wait(task_id), client.get_task(task_id).error
    mean, spread = client.get_result(task_id)
    stacked = pd.concat([one] * 5, ignore_index=True)
    assert_same(mean, stacked.mean())
    assert_same(spread, stacked.groupby("g").x0.var())
    peaks = {name: _peak_rss(cluster.workers[name].process.pid) for name in ("w1", "w4")}
    extra = 3 * one.memory_usage().sum()  # what reading w4's table whole would add at least
    assert extra > 30e6
    assert abs(peaks["w4"] - peaks["w1"]) < extra / 2, (peaks, log_text(client, task_id))
