"""SQL sources in process, over a real PostgreSQL server (one per module) and SQLite: steps
pushed down to the database give what pandas gives over the same rows read in chunks."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import numpy as np
import pandas as pd
import pytest
from postgres import Postgres
from test_chunks import run_over
from test_pandas import assert_same, plan_of
from test_pandas_stats import histogram, value_counts

from sdk import pandas as lazy
from sdk.analytics.plan import PrivacyError
from worker.chunks import stage_parts
from worker.datasets import DataDir, DatasetError
from worker.pushdown import pushed_parts
from worker.sources import Catalog, SqlSpec, parse_sources, sql_source_key

READER_PASSWORD = "reader-pw-93b1"


def table_rows(count: int = 48) -> pd.DataFrame:
    """Integers with and without NULLs, multiples of 1/8 (sums exact in any order) with NULLs,
    text keys with NULLs and a rare key, a small integer key."""
    random = np.random.default_rng(7)
    n = pd.array(random.integers(-50, 50, count), dtype="Int64")
    n[random.random(count) < 0.2] = pd.NA
    f = random.integers(-80, 80, count) / 8
    f[random.random(count) < 0.2] = np.nan
    k = random.choice(["a", "b", "c", None], count).astype(object)
    k[[5, 17]] = "rare"
    return pd.DataFrame({"i": random.integers(0, 10, count), "n": n, "f": f, "k": k,
                         "g": random.integers(0, 5, count), "b": random.random(count) < 0.3})


@pytest.fixture(scope="module")
def postgres():
    server = Postgres()
    import sqlalchemy as sa
    server.load("visits", table_rows(), {"i": sa.BigInteger, "n": sa.BigInteger,
                                         "f": sa.Double, "k": sa.Text, "g": sa.Integer,
                                         "b": sa.Boolean})
    server.admin("UPDATE visits SET f = 'NaN' WHERE i = 9")  # a real NaN reads as missing
    server.admin(f"CREATE ROLE reader LOGIN PASSWORD '{READER_PASSWORD}'")
    yield server
    server.stop()


@pytest.fixture
def visits(postgres, monkeypatch, tmp_path):
    monkeypatch.setenv("VISITS_PW", READER_PASSWORD)
    sources = parse_sources(f'[sources.visits]\nurl = "{postgres.url("reader")}"\n'
                            'password_env = "VISITS_PW"\ntable = "visits"\n')
    return Catalog(DataDir(tmp_path), sources).open("visits")


def crosstab(index: Any, columns: Any, **declared: Any) -> Any:
    if isinstance(index, pd.Series):
        return pd.crosstab(index, columns)
    return lazy.crosstab(index, columns, **declared)


def kept(rows: Any, *columns: str) -> list[Any]:
    """Columns of the same filtered rows (one filter node, as pandas' rows line up)."""
    return [rows[c] for c in columns]


def pushed(plan, stage, tables, inputs, min_rows, chunk_rows):
    (argument, table), = tables.items()
    parts = pushed_parts(plan, stage, argument, table, inputs, min_rows)
    assert parts is not None, f"step {stage + 1} was not pushed down"
    return parts


def chunked(plan, stage, tables, inputs, min_rows, chunk_rows):
    return stage_parts(plan, stage, tables, inputs, min_rows, chunk_rows, pushdown=False)


MAPPED = {
    "sums": lambda d: (d.i.sum(), d.f.sum(), d.n.sum(), d[["i", "f", "n"]].sum(), d.count(),
                       d.k.count(), d[["i", "n"]].sum()),
    "means": lambda d: (d.f.mean(), d[["i", "f", "n"]].mean(), d.i.mean()),
    "spreads": lambda d: (d.f.var(), d[["i", "f", "n"]].std(ddof=0), d.i.sem(), d.n.var()),
    "filters": lambda d: (d[d.i > 3].f.mean(), d[(d.i > 3) & ~(d.f < 0.5)].n.sum(),
                          d[d.f != 1.0].i.count(), d[d.f.isna()].i.sum(),
                          d[d.n.notna() | (d.f >= 2)][["i", "f"]].sum(), d[d.i > 100].f.sum()),
    "arithmetic": lambda d: ((d.i * 2 + d.f - 1).sum(), (d.i / 4).mean(), (-d.n).sum(),
                             abs(d.f - 3).sum(), (3 - d.i * d.g).sum(), (d[["i", "f"]] * 2).sum(),
                             (d.f > d.i).sum(), (d.i > 3).sum(), (d.f > 1).mean()),
    "groupby": lambda d: (d.groupby("g")[["i", "f", "n"]].sum(), d.groupby("k").i.mean(),
                          d.groupby("g").size(), d.groupby("g").count(),
                          d[d.i > 2].groupby("k").f.sum(), d.groupby("k")[["f"]].mean(),
                          d.groupby("g").k.count()),
    "grouped spreads": lambda d: (d.groupby("g").f.var(), d.groupby("k")[["i", "f", "n"]].std(),
                                  d.groupby("g").n.sem(ddof=0), d[d.i > 2].groupby("k").i.var(),
                                  d.groupby("b").f.std(), d.groupby("k").agg(["mean", "std"])),
    "several keys": lambda d: (d.groupby(["g", "k"]).f.sum(), d.groupby(["k", "b"]).i.mean(),
                               d.groupby(["g", "k"]).size(), d.groupby(["k", "g"]).count(),
                               d.groupby(["g", "b"])[["f", "n"]].var(),
                               d[d.i > 100].groupby(["g", "k"]).f.sum()),
    "value counts": lambda d: (value_counts(d.g), value_counts(d.k, normalize=True),
                               value_counts(d.b), value_counts(d.i > 4),
                               value_counts(d[d.f > 0].i), value_counts(d[["k", "g"]]),
                               value_counts(d[["b"]], normalize=True)),
    "histograms": lambda d: (histogram(d.f, [-10, -2.5, 0, 0.125, 10]),
                             histogram(d.i, [0, 3, 3, 9]), histogram(d.n, [-50.5, 0, 49]),
                             histogram(d[d.i > 2].f, [-1, 1])),
    "crosstabs": lambda d: (crosstab(d.k, d.g), crosstab(d.b, d.i > 4),
                            crosstab(*kept(d[d.f > 0], "g", "k"))),
    "declared keys": lambda d: (
        value_counts(d.k, ["a", "b", "z"]), value_counts(d.g, [3, 0, 9]),
        d.groupby("k", keys=["c", "a", "zz"]).f.sum(), d.groupby("g", keys=[4, 1, 7]).i.var(),
        d.groupby(["g", "k"], keys=[(1, "a"), (9, "b"), (0, "rare")]).size(),
        d.groupby("b", keys=[True]).n.mean(),
        crosstab(d.b, d.g, row_values=[True, False], column_values=[0, 1, 7])),
}
NOT_PANDAS = {"declared keys"}  # pandas' groupby has no keys=: test_pandas covers them


@pytest.mark.parametrize("min_rows", [1, 3])
@pytest.mark.parametrize("family", MAPPED)
def test_pushed_down_steps_equal_pandas_over_the_rows_read_in_chunks(visits, family, min_rows):
    body = MAPPED[family]

    def pushed_as_chunked(plan, stage, tables, inputs, min_rows, chunk_rows):
        parts = pushed(plan, stage, tables, inputs, min_rows, chunk_rows)
        # sums of deviations from a mean are near 0, their last bits differ by summation order
        assert_same(parts, chunked(plan, stage, tables, inputs, min_rows, chunk_rows), 1e-9)
        return parts

    expected = run_over(body, visits, min_rows, 7, chunked)
    assert_same(run_over(body, visits, min_rows, 7, pushed_as_chunked), expected)
    if min_rows == 1 and family not in NOT_PANDAS:  # and pandas on the table read at once
        rows = table_rows().assign(f=lambda t: t.f.where(t.i != 9))
        rows = rows.astype({"n": "float64"})
        assert_same(expected, body(rows))


@pytest.mark.parametrize("body", [
    lambda d: (d.i // 3).sum(), lambda d: (d.i % 3).sum(), lambda d: (d.f ** 2).sum(),
    lambda d: d.f.sum(skipna=False), lambda d: d.f.skew(), lambda d: d.n.value_counts(),
    lambda d: d.groupby(["g", "f"]).i.sum(),  # a float key among several
    lambda d: ((d.i > 3) + d.b).sum(),  # pandas adds masks as `|`
    lambda d: lazy.crosstab(d[d.i > 2].k, d.g),  # pandas lines up the rows by their index
    lambda d: lazy.crosstab(d.f > d.i, d.g),  # an unnamed Series
    lambda d: d[d.k == "rare"].i.sum(),  # two rows: under min_rows 3, the chunks leave it out
    lambda d: (d.f * np.nan).sum(), lambda d: d.groupby("f").i.sum(),
])
def test_what_does_not_map_is_read_in_chunks_with_the_same_answer(visits, body):
    refused = []

    def step(plan, stage, tables, inputs, min_rows, chunk_rows):
        refused.append(pushed_parts(plan, stage, "d", visits, inputs, min_rows) is None)
        return stage_parts(plan, stage, tables, inputs, min_rows, chunk_rows)

    assert_same(run_over(body, visits, 3, 7, step), run_over(body, visits, 3, 1000, chunked))
    assert any(refused)


def test_pushdown_asks_the_database_for_aggregates_with_task_values_bound(visits, postgres):
    before = len(postgres.log())
    marker = 4242.125
    run_over(lambda d: d[d.f < marker].groupby("k").i.sum(), visits, 1, 7, pushed)
    statements = postgres.log()[before:]
    assert "GROUP BY" in statements and "sum(" in statements
    assert str(marker) not in statements.split("parameters:")[0]  # bound, not SQL text
    assert "$" in statements


def test_a_wrong_password_fails_with_a_sentence_and_no_password(postgres, tmp_path, caplog,
                                                                monkeypatch):
    monkeypatch.setenv("VISITS_PW", "not-the-password-5521")
    spec = SqlSpec(postgres.url("reader"), "VISITS_PW", "visits", None, None)
    table = Catalog(DataDir(tmp_path), {"visits": spec}).open("visits")
    with caplog.at_level(logging.INFO, "deltaflow.worker"):
        with pytest.raises(DatasetError, match="source 'visits': cannot connect to its database"
                           ) as raised:
            run_over(lambda d: d.i.sum(), table, 1, 7)
    assert "not-the-password-5521" not in str(raised.value) + caplog.text
    assert "password authentication failed" in caplog.text  # the holder's log says why


def test_sources_file_errors_name_the_key_and_never_quote_a_password():
    env = {"PW": "x"}
    cases = {
        '[sources.v]\nurl = "postgresql://r:hunter2@h/db"\ntable = "t"\n': "url holds a password",
        '[sources.v]\nurl = "postgresql://r@h/db"\n': "needs either table or query",
        '[sources.v]\nurl = "postgresql://r@h/db"\ntable = "t"\nquery = "select 1"\n':
            "needs either table or query",
        '[sources.v]\npath = "a.csv"\nurl = "sqlite://"\n': "needs either path",
        '[sources.v]\npath = "../a.csv"\n': "escapes",
        '[sources.v]\npath = "a.xlsx"\n': "path must be a .csv, .tsv, .parquet file",
        '[sources.v]\nurl = "nosuch://r@h/db"\ntable = "t"\n': "no SQLAlchemy dialect",
        '[sources.v]\nurl = "postgresql://r@h/db"\ntable = "t"\npassword_env = "NOPE"\n':
            "environment variable NOPE is not set",
        '[sources.v]\nurl = "postgresql://r@h/db"\ntable = "t"\nport = "1"\n': "has no key 'port'",
        '[sources.v]\nurl = "::hunter2::"\ntable = "t"\n': "url is not a SQLAlchemy URL",
        '[other]\nx = 1\n': "only [sources.NAME] tables",
    }
    for text, message in cases.items():
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(".", r"\.")) \
                as raised:
            parse_sources(text, env)
        assert "[sources.v]" in str(raised.value) or "[other]" in str(raised.value)
        assert "hunter2" not in str(raised.value)


def test_sqlite_tables_and_queries_are_read_in_chunks_read_only(tmp_path):
    path = tmp_path / "db.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE people (age INTEGER, cost REAL, city TEXT)")
        db.executemany("INSERT INTO people VALUES (?, ?, ?)",
                       [(20 + i % 30, i / 4 if i % 5 else None, "abc"[i % 3]) for i in range(50)])
    sources = parse_sources(f'[sources.people]\nurl = "sqlite:///{path}"\ntable = "people"\n'
                            f'[sources.recent]\nurl = "sqlite:///{path}"\n'
                            'query = "select age, cost from people where age >= 30"\n'
                            '[sources.copy]\npath = "people.parquet"\n')
    catalog = Catalog(DataDir(tmp_path), sources)
    stacked = pd.read_sql("select * from people", sqlite3.connect(path))
    stacked.to_parquet(tmp_path / "people.parquet", index=False)
    body = lambda d: (d.age.mean(), d.cost.var(), d.groupby("city").cost.sum())  # noqa: E731
    for name in ("people", "copy"):
        assert_same(run_over(body, catalog.open(name), 3, 8), body(stacked))
    recent = stacked[stacked.age >= 30][["age", "cost"]]
    assert_same(run_over(lambda d: d.mean(), catalog.open("recent"), 3, 8), recent.mean())
    assert catalog.names() == ["copy", "db.sqlite", "people", "people.parquet", "recent"]
    with catalog.open("people").connect() as connection:
        import sqlalchemy as sa
        with pytest.raises(sa.exc.OperationalError, match="readonly"):
            connection.execute(sa.text("DELETE FROM people"))


def test_the_ledger_keys_a_sql_source_by_its_database_and_table_or_query():
    table = SqlSpec("postgresql://reader@db.local/hospital", "PW", "visits", None, None)
    assert sql_source_key(table) == "sql:postgresql://reader@db.local/hospital:table:visits"
    query = SqlSpec("postgresql://reader@db.local/hospital", "PW", None, None, "select  a\nfrom t")
    same = SqlSpec("postgresql://reader@db.local/hospital", None, None, None, "select a from t")
    assert sql_source_key(query) == sql_source_key(same)
    assert sql_source_key(query).startswith("sql:postgresql://reader@db.local/hospital:query:")


def test_a_value_sent_for_a_column_is_refused_before_anything_is_pushed_down(visits):
    """A coordinator that sends a value for a node of rows would change what is summed (here
    sum(0 + f) for sum(i + f)): the pushed-down step refuses it as the chunked reader does."""
    plan = plan_of(lambda d: (d.i + d.f).sum())
    column = next(n.id for n in plan.graph.nodes if n.op == "getitem" and n.params["key"] == "i")
    with pytest.raises(PrivacyError, match="which it does not need: refused"):
        stage_parts(plan, 0, {"d": visits}, {column: 0}, 1, 7)


@pytest.mark.parametrize("params", [{"bins": [2.0, 0.0, 1.0]}, {"bins": [0.0, np.inf, 2.0]}])
def test_a_histogram_the_sdk_would_not_build_is_read_in_chunks(visits, params):
    """A hand-made graph's histogram (edges out of order or infinite) is not pushed down: the
    chunked reader's answer is the one numpy's rule gives."""
    plan = plan_of(lambda d: histogram(d.f, [0, 1, 2]))
    node = next(n for n in plan.graph.nodes if n.op == "reduce")
    node.params.update(params)
    assert pushed_parts(plan, 0, "d", visits, {}, 1) is None


@pytest.mark.parametrize("means", [
    pd.Series(["x"], index=[0], name="f"), pd.Series([1.5], index=[0.5], name="f"),
    pd.Series([np.inf], index=[0], name="f"), pd.DataFrame({"f": [1.0], "x": [2.0]}, index=[0]),
    pd.Series(0.5, index=range(20_000), name="f")])
def test_means_per_key_that_are_not_numbers_by_key_are_not_pushed_down(visits, means):
    """The previous step's means come from the coordinator: text, a key of another type, an
    infinite mean, more columns than the step's or more keys than a statement's parameters
    hold are left to the chunked reader (and never reach SQL)."""
    plan = plan_of(lambda d: d.groupby("g").f.var())
    (mean,) = plan.inputs_of(1)
    assert pushed_parts(plan, 1, "d", visits, {mean: means}, 1) is None


def test_an_integer_sum_beyond_int64_is_read_in_chunks_as_pandas_wraps_it(postgres, monkeypatch,
                                                                          tmp_path):
    """PostgreSQL sums BIGINTs exactly (as numeric); pandas' int64 sum wraps around."""
    import sqlalchemy as sa
    postgres.load("huge", pd.DataFrame({"x": [2**62] * 3, "g": [1] * 3}),
                  {"x": sa.BigInteger, "g": sa.BigInteger})
    monkeypatch.setenv("VISITS_PW", READER_PASSWORD)
    sources = parse_sources(f'[sources.huge]\nurl = "{postgres.url("reader")}"\n'
                            'password_env = "VISITS_PW"\ntable = "huge"\n')
    huge = Catalog(DataDir(tmp_path), sources).open("huge")
    for body in (lambda d: d.x.sum(), lambda d: d.groupby("g").x.sum()):
        plan = plan_of(body)
        assert pushed_parts(plan, 0, "d", huge, {}, 1) is None
        assert_same(run_over(body, huge, 1, 7), run_over(body, huge, 1, 7, chunked))


def test_means_declared_keys_and_edges_travel_as_bind_parameters(visits, postgres):
    before = len(postgres.log())
    markers = ("marker-key-77", "4242.375", "4242.625")
    run_over(lambda d: (d.groupby("k", keys=["a", markers[0]]).f.var(),
                        histogram(d.f, [-4242.375, 0, 4242.625])), visits, 1, 7, pushed)
    statements = postgres.log()[before:]
    assert "VALUES" in statements and "CASE WHEN" in statements and " IN (" in statements
    sql = [line for line in statements.splitlines() if "parameters:" not in line]
    assert not [line for line in sql if any(marker in line for marker in markers)]
    assert all(marker in statements for marker in markers)  # in the parameters
