"""Tables read in chunks give what the whole table gives: in process, over CSV and Parquet files.

Every family of test_pandas runs over a file read a few rows at a time, with `min_rows` rules
whose sets (what a filter kept, a group, a cell) span chunks, against the same file read at once.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdk import values
from sdk.analytics.errors import EvaluationError
from sdk.analytics.plan import Aggregation
from test_pandas import FAMILIES, assert_same, frame, plan_of
from worker.chunks import stage_parts, used_columns
from worker.datasets import DataDir
from worker.sources import Catalog, Table

WHOLE = 10**9  # a chunk size that reads any test table at once


def run_over(body: Callable[[Any], Any], table: Table, min_rows: int, chunk_rows: int,
             step: Callable[..., Any] = stage_parts) -> Any:
    """Every stage of `body`'s task over one holder's `table`, as the client gets the result;
    `step` computes a stage's parts."""
    plan = plan_of(body)
    aggregation = Aggregation(plan)
    for stage in range(plan.stage_count):
        inputs = aggregation.inputs_for(stage)
        parts = step(plan, stage, {"d": table}, inputs, min_rows, chunk_rows)
        aggregation.add_stage(stage, [parts])
    return values.decode(values.encode(aggregation.result()))


def outcome(body: Callable[[Any], Any], table: Table, min_rows: int, chunk_rows: int) -> Any:
    try:
        return run_over(body, table, min_rows, chunk_rows)
    except EvaluationError as error:
        return f"refused: {error}"


def write(table: pd.DataFrame, folder: Path, suffix: str) -> Table:
    if suffix == ".parquet":
        table.to_parquet(folder / f"d{suffix}", index=False)
    else:
        table.to_csv(folder / f"d{suffix}", index=False)
    return Catalog(DataDir(folder)).open(f"d{suffix}")


@st.composite
def tables(draw: Any) -> tuple[pd.DataFrame, int]:
    return frame(draw(st.integers(0, 24)), draw), draw(st.integers(-1100, 1100))


@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=4, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(drawn=tables(), chunk_rows=st.integers(2, 9), min_rows=st.sampled_from([1, 3, 7]),
       suffix=st.sampled_from([".csv", ".parquet"]))
def test_chunks_give_what_the_whole_table_gives(family, suffix, drawn, chunk_rows, min_rows):
    data, threshold = drawn
    check_chunks(lambda d: FAMILIES[family](d, threshold), data, suffix, chunk_rows, min_rows)


def check_chunks(body: Callable[[Any], Any], data: pd.DataFrame, suffix: str, chunk_rows: int,
                 min_rows: int) -> None:
    """`body` over `data` read in chunks gives what it gives over the table read whole."""
    with tempfile.TemporaryDirectory() as folder:
        table = write(data, Path(folder), suffix)
        expected = outcome(body, table, min_rows, WHOLE)
        ours = outcome(body, table, min_rows, chunk_rows)
    if isinstance(expected, str):
        assert ours == expected
    else:
        assert_same(ours, expected, atol=1e-9)


def test_min_rows_counts_a_set_over_the_whole_table_never_a_chunk(tmp_path):
    """Two rows kept by a filter, one per chunk, are fewer than min_rows 3: nothing is summed;
    three, one per chunk, are enough. A group, and a cell, spread over chunks likewise."""
    data = pd.DataFrame({"x": [1, 50, 2, 60, 3, 70], "g": ["a", "b", "a", "b", "c", "a"],
                         "y": [1.0, np.nan, np.nan, 5.0, 1.0, np.nan]})
    table = write(data, tmp_path, ".csv")
    for chunk_rows in (1, 2, 4, WHOLE):
        run = lambda body: run_over(body, table, 3, chunk_rows)  # noqa: E731
        assert run(lambda d: d[d.x > 55].x.sum()) == 0  # 60, 70: too few
        assert run(lambda d: d[d.x > 45].x.sum()) == 180
        by_group = run(lambda d: d.groupby("g").x.sum())
        assert by_group.to_dict() == {"a": 73}  # b and c have too few rows
        cells = run(lambda d: d.groupby("g")[["x", "y"]].sum())
        assert cells.to_dict() == {"x": {"a": 73}, "y": {"a": 0.0}}  # a has one y
        assert run(lambda d: d.y.count()) == 3


def test_only_the_columns_a_graph_selects_are_read():
    assert used_columns(plan_of(lambda d: (d.x.mean(), d[["y", "x"]].sum())), "d") == ["x", "y"]
    assert used_columns(plan_of(lambda d: d[d.x > 1].y.mean()), "d") is None  # a filter: all
    assert used_columns(plan_of(lambda d: d.groupby("g").mean()), "d") is None


def test_a_file_is_read_with_only_those_columns(tmp_path):
    data = pd.DataFrame({"x": [1, 2], "secret": ["p", "q"], "y": [0.5, 1.5]})
    for suffix in (".csv", ".parquet"):
        table = write(data, tmp_path, suffix)
        chunks = list(table.chunks(["y", "x", "absent"], 1))
        assert [list(c.columns) for c in chunks] == [["x", "y"], ["x", "y"]]
        with pytest.raises(EvaluationError, match="no column named 'absent'"):
            run_over(lambda d: d.absent.sum(), table, 1, 1)
