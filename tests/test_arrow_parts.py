"""A step reduced in Arrow over a Parquet file gives exactly the parts the chunked pandas reader
gives (labels, dtypes, the `min_rows` rule by the whole file's counts), or does not map."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdk.analytics.plan import Aggregation, PrivacyError
from test_pandas import assert_same, plan_of
from worker.arrow_parts import arrow_parts
from worker.chunks import parts_in_chunks, stage_parts
from worker.datasets import DataDir
from worker.sources import Catalog, FileTable

MAPPED: dict[str, Callable[[Any], Any]] = {
    "frame mean": lambda d: d[["i", "f", "big", "b", "n"]].mean(),
    "numeric sums": lambda d: d.sum(numeric_only=True),
    "counts of every column": lambda d: d.count(),
    "column moments": lambda d: (d.f.var(), d.i.sum(), d.b.sum(), d.n.mean(), d.k.count()),
    "spread": lambda d: (d[["i", "f", "b", "n"]].std(ddof=0), d.sem(numeric_only=True)),
}


def write(folder: Path, columns: dict[str, pa.Array], row_group: int = 4) -> FileTable:
    pq.write_table(pa.table(columns), folder / "d.parquet", row_group_size=row_group)
    return Catalog(DataDir(folder)).open("d.parquet")


@st.composite
def columns(draw: Any) -> dict[str, pa.Array]:
    rows = draw(st.integers(0, 20))
    column = lambda strategy: draw(st.lists(strategy, min_size=rows, max_size=rows))  # noqa: E731
    eighths = st.integers(-8000, 8000).map(lambda k: k / 8)
    return {
        "i": pa.array(column(st.integers(-1000, 1000)), pa.int64()),
        "f": pa.array(column(st.one_of(eighths, st.just(math.nan), st.none())), pa.float64()),
        "big": pa.array(column(st.integers(0, 16).map(lambda k: 1e9 + k / 8)), pa.float64()),
        "b": pa.array(column(st.booleans()), pa.bool_()),
        "n": pa.array(column(st.one_of(st.integers(-50, 50), st.none())), pa.int64()),
        "k": pa.array(column(st.sampled_from(["a", "b", None])), pa.string()),
    }


def steps(body: Callable[[Any], Any], table: FileTable, min_rows: int, batch_rows: int
          ) -> list[tuple[Any, Any]]:
    """Each stage's parts in Arrow and in pandas' chunks, the stages fed pandas' results."""
    plan = plan_of(body)
    aggregation = Aggregation(plan)
    found = []
    for stage in range(plan.stage_count):
        inputs = aggregation.inputs_for(stage)
        ours = arrow_parts(plan, stage, "d", table, dict(inputs), min_rows, batch_rows)
        theirs = parts_in_chunks(plan, stage, "d", table, None, dict(inputs), min_rows,
                                 batch_rows)
        found.append((ours, theirs))
        aggregation.add_stage(stage, [theirs])
    return found


@pytest.mark.parametrize("body", MAPPED)
@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(drawn=columns(), min_rows=st.sampled_from([1, 3, 7]), batch_rows=st.integers(1, 9))
def test_arrow_gives_the_parts_pandas_gives(tmp_path, body, drawn, min_rows, batch_rows):
    table = write(tmp_path, drawn)
    for ours, theirs in steps(MAPPED[body], table, min_rows, batch_rows):
        assert ours is not None, "the step should map"
        assert_same(ours, theirs, atol=1e-6)


def test_missing_values_infinities_and_wrapping_sums_as_pandas(tmp_path):
    table = write(tmp_path, {
        "i": pa.array([2**62, 2**62, 2**62, 1], pa.int64()),  # wraps in pandas' int64
        "f": pa.array([math.inf, -math.inf, 1.0, 2.0]),  # inf - inf is NaN in pandas too
        "g": pa.array([math.inf, None, math.nan, 2.0]),
    })
    for body in (lambda d: d.sum(), lambda d: d.mean(), lambda d: (d.g.var(), d.i.sum())):
        for ours, theirs in steps(body, table, 1, 3):
            assert ours is not None
            assert_same(ours, theirs)
    (ours, _), = steps(lambda d: d.sum(), table, 1, 2)
    assert ours[1]["sum"]["i"] == pd.Series([2**62] * 3 + [1], dtype="int64").sum() < 0
    assert math.isnan(ours[1]["sum"]["f"]) and ours[1]["sum"]["g"] == math.inf


def test_a_column_of_too_few_values_counts_as_empty(tmp_path):
    """min_rows 3: f has two values in all (one per batch), so its cell is empty; the file's
    two rows of a second table are too few for any part."""
    table = write(tmp_path, {"i": pa.array([1, 2, 3, 4], pa.int64()),
                             "f": pa.array([1.5, None, None, 2.5])})
    (ours, theirs), = steps(lambda d: d.mean(), table, 3, 2)
    assert_same(ours, theirs)
    assert ours[1]["count"].to_dict() == {"i": 4, "f": 0} and ours[1]["sum"]["f"] == 0
    (tmp_path / "few").mkdir()
    few = write(tmp_path / "few", {"i": pa.array([5, 6], pa.int64())})
    (ours, theirs), = steps(lambda d: d.i.sum(), few, 3, 1)
    assert_same(ours, theirs)
    assert ours[2] == {"sum": 0}


@pytest.mark.parametrize("body, columns", [
    (lambda d: d[d.i > 1].i.sum(), {}),  # a filter
    (lambda d: d.groupby("i").f.sum(), {}),  # groups
    (lambda d: (d.i * 2).sum(), {}),  # row-wise arithmetic
    (lambda d: d.i.sum(skipna=False), {}),
    (lambda d: d.k.sum(), {}),  # text is summed by no one here
    (lambda d: d.x.sum(), {"x": pa.array([1.5, 2.5], pa.float32())}),
    (lambda d: d.x.sum(), {"x": pa.array([True, None])}),  # objects in pandas
    (lambda d: d.absent.sum(), {}),
])
def test_steps_that_do_not_map_are_read_in_chunks(tmp_path, body, columns):
    table = write(tmp_path, {"i": pa.array([1, 2], pa.int64()), "f": pa.array([0.5, 1.5]),
                             "k": pa.array(["a", "b"]), **columns})
    plan = plan_of(body)
    assert arrow_parts(plan, 0, "d", table, {}, 1, 2) is None


def test_extension_dtypes_from_pandas_metadata_do_not_map(tmp_path):
    pd.DataFrame({"x": pd.array([1, None, 3], dtype="Int64")}).to_parquet(
        tmp_path / "d.parquet")
    table = Catalog(DataDir(tmp_path)).open("d.parquet")
    assert arrow_parts(plan_of(lambda d: d.x.sum()), 0, "d", table, {}, 1, 2) is None


def test_a_coordinators_odd_means_give_what_pandas_gives(tmp_path):
    """The mean a spread step is sent is the coordinator's: labels the step lacks, a label
    missing, NaN; each gives pandas' parts. A value the step does not need is refused."""
    table = write(tmp_path, {"a": pa.array([1.0, 2.0, 4.0]), "b": pa.array([1, 5, 9])})
    plan = plan_of(lambda d: d[["a", "b"]].var())
    spread = max(plan.stage_of, key=plan.stage_of.get)
    for mean in (pd.Series({"a": 2.0, "z": 1.0}), pd.Series({"b": math.nan, "a": 0.5}), 3.0):
        inputs = {plan.graph[spread].inputs[1]: mean}
        ours = arrow_parts(plan, 1, "d", table, dict(inputs), 1, 2)
        assert_same(ours, parts_in_chunks(plan, 1, "d", table, None, dict(inputs), 1, 2))
    with pytest.raises(PrivacyError, match="does not need"):
        arrow_parts(plan, 0, "d", table, {0: np.ones(3)}, 1, 2)


def test_the_worker_logs_each_step_it_reduces_in_arrow(tmp_path, caplog):
    table = write(tmp_path, {"a": pa.array([1.0, 2.0, 4.0])})
    with caplog.at_level(logging.INFO, logger="deltaflow.worker"):
        parts = stage_parts(plan_of(lambda d: d.a.mean()), 0, {"d": table}, {}, 1, 2)
        stage_parts(plan_of(lambda d: d[d.a > 1].a.sum()), 0, {"d": table}, {}, 1, 2)
    assert parts[2] == {"sum": 7.0, "count": 3}
    assert "step 1 over 'd.parquet': reduced in Arrow" in caplog.text
    assert "step 1 over 'd.parquet' is read in chunks: a reduction of rows other than the " \
        "file's own columns" in caplog.text


def test_no_error_quotes_a_value_of_the_file(tmp_path):
    """Arrow's own checked cast would refuse 2**53 + 1 as a float64, quoting it; pandas rounds
    it, and so does the Arrow path, in sums of an int64 column with a null and in deviations."""
    secret = 2**53 + 1
    table = write(tmp_path, {"n": pa.array([secret, None, 3], pa.int64()),
                             "i": pa.array([secret, 2, 3], pa.int64())})
    for body in (lambda d: d.n.sum(), lambda d: (d.n.var(), d.i.std())):
        for ours, theirs in steps(body, table, 1, 2):
            assert ours is not None
            assert_same(ours, theirs)


def test_columns_pandas_cannot_name_as_the_file_does_do_not_map(tmp_path):
    """Two fields of one name (pandas reads two columns "a"; added up as one, a cell of one
    value that min_rows hides would come out as the difference of two answers), and labels
    pandas restores from its metadata as numbers or tuples, which name no field."""
    rows = 10
    hidden = pa.array([1234.5] + [None] * (rows - 1))
    pq.write_table(pa.Table.from_arrays([hidden, pa.array(np.arange(rows, dtype=float)),
                                         pa.array(range(rows))], names=["a", "a", "i"]),
                   tmp_path / "d.parquet")
    table = Catalog(DataDir(tmp_path)).open("d.parquet")
    assert arrow_parts(plan_of(lambda d: d.a.sum()), 0, "d", table, {}, 5, 4) is None
    assert arrow_parts(plan_of(lambda d: d.i.sum()), 0, "d", table, {}, 5, 4) is None
    for columns in ([0, 1], [("x", "y"), ("x", "z")]):
        pd.DataFrame(np.ones((3, 2)), columns=pd.Index(columns) if columns[0] == 0 else
                     pd.MultiIndex.from_tuples(columns)).to_parquet(tmp_path / "d.parquet")
        assert arrow_parts(plan_of(lambda d: d.sum()), 0, "d", table, {}, 1, 2) is None


def test_numeric_only_over_columns_of_unknown_dtype_does_not_map(tmp_path):
    """An int64 column without statistics may hold a null (float64 in pandas) or not: whether
    it is numeric is sure, which dtype it is is not; a frame's numeric_only reduction over it
    is read in chunks, not reduced without it."""
    pq.write_table(pa.table({"i": pa.array([1, 2, 3, 4]), "f": pa.array([1.0, 2.0, 2.5, 2.5])}),
                   tmp_path / "d.parquet", write_statistics=False)
    table = Catalog(DataDir(tmp_path)).open("d.parquet")
    assert arrow_parts(plan_of(lambda d: d.sum(numeric_only=True)), 0, "d", table, {}, 1, 2) \
        is None
    (ours, theirs), = steps(lambda d: d.f.sum(), table, 1, 2)
    assert_same(ours, theirs)


def test_the_columns_name_pandas_restores_is_kept(tmp_path):
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [3, 4]})
    frame.columns.name = "measures"
    frame.to_parquet(tmp_path / "d.parquet")
    table = Catalog(DataDir(tmp_path)).open("d.parquet")
    (ours, theirs), = steps(lambda d: d.mean(), table, 1, 2)
    assert_same(ours, theirs)
    assert ours[1]["sum"].index.name == "measures"


@pytest.mark.parametrize("mean", [
    pd.Series({("a",): 1.0, ("b",): 2.0}),  # a MultiIndex, which pandas does not line up
    pd.Series({"a": 1 + 2j, "b": 2.0}),  # complex: the imaginary part would be dropped
    pd.Series({"a": 10**400, "b": 2.0}, dtype=object),  # no float64 holds it
])
def test_means_pandas_would_not_centre_on_are_read_in_chunks(tmp_path, mean):
    table = write(tmp_path, {"a": pa.array([1.0, 2.0, 4.0]), "b": pa.array([1, 5, 9])})
    plan = plan_of(lambda d: d[["a", "b"]].var())
    spread = max(plan.stage_of, key=plan.stage_of.get)
    inputs = {plan.graph[spread].inputs[1]: mean}
    assert arrow_parts(plan, 1, "d", table, inputs, 1, 2) is None
