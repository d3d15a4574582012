"""Federated pandas equals pandas on the stacked rows: property tests over random splits.

Each example draws a frame, splits its rows over 2 to 5 holders, runs a task's stages in this
process (`run_in_process`) and compares the result, after a trip through the value codec, with
pandas on the stacked rows. The data are multiples of 1/8, so sums are exact and any difference
comes from how moments are computed (the large-mean column would expose a variance that cancels).
"""

from __future__ import annotations

from functools import reduce
from typing import Any, Callable

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdk import dataset, values
from sdk import pandas as lazy
from sdk.analytics.errors import EvaluationError
from sdk.analytics.graph import Graph
from sdk.analytics.ops import add_parts
from sdk.analytics.plan import Aggregation, Plan, run_in_process, worker_parts
from sdk.task import HorizontalAnalytics
from tasks import Rows  # a task over one dataset `d` whose execute is a given function

RTOL = 1e-9
Body = Callable[[Any, int], Any]  # (frame, threshold) -> what execute() returns


def plan_of(body: Callable[[Any], Any]) -> Plan:
    return Plan(*Graph.from_proto(Rows(body).build().spec.analytics))


def federated(body: Callable[[Any], Any], holders: list[pd.DataFrame]) -> Any:
    """What the client gets: every stage run over `holders`, then through the value codec."""
    result = run_in_process(plan_of(body), [{"d": h} for h in holders])
    return values.decode(values.encode(result))


def assert_same(ours: Any, theirs: Any, atol: float = 0) -> None:
    """Equal values to RTOL, with the same dtypes, labels and shape of nest."""
    if isinstance(theirs, pd.DataFrame):
        pd.testing.assert_frame_equal(ours, theirs, check_exact=False, rtol=RTOL, atol=atol)
    elif isinstance(theirs, pd.Series):
        pd.testing.assert_series_equal(ours, theirs, check_exact=False, rtol=RTOL, atol=atol)
    elif isinstance(theirs, np.ndarray):
        assert isinstance(ours, np.ndarray) and ours.dtype == theirs.dtype, (ours, theirs)
        np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=atol)
    elif isinstance(theirs, (tuple, list, dict)):
        assert type(ours) is type(theirs) and len(ours) == len(theirs)
        if isinstance(theirs, dict):
            assert list(ours) == list(theirs)
            ours, theirs = list(ours.values()), list(theirs.values())
        for mine, expected in zip(ours, theirs):
            assert_same(mine, expected, atol)
    else:
        assert np.asarray(ours).dtype == np.asarray(theirs).dtype, (ours, theirs)
        assert (pd.isna(ours) and pd.isna(theirs)) or np.isclose(ours, theirs, RTOL, atol)


def frame(rows: int, draw: Any) -> pd.DataFrame:
    eighths = st.integers(-8000, 8000).map(lambda k: k / 8)
    column = lambda strategy: draw(st.lists(strategy, min_size=rows, max_size=rows))  # noqa: E731
    return pd.DataFrame({
        "i": pd.Series(column(st.integers(-1000, 1000)), dtype="int64"),
        "f": pd.Series(column(st.one_of(eighths, eighths, st.just(np.nan))), dtype="float64"),
        # a large mean and a tiny variance: sum(x**2) - sum(x)**2 / n would cancel to noise
        "big": pd.Series(column(st.integers(0, 16).map(lambda k: 1e9 + k / 8)), dtype="float64"),
        "b": pd.Series(column(st.booleans()), dtype="bool"),
        "g": pd.Series(column(st.integers(0, 3)), dtype="int64"),
        "k": pd.Series(column(st.sampled_from(["a", "b", "c", None])), dtype="str"),
    })


@st.composite
def split_frames(draw: Any) -> tuple[list[pd.DataFrame], int]:
    """Rows split over 2 to 5 holders (each with at least one row), and a filter threshold."""
    holders = draw(st.integers(2, 5))
    rows = draw(st.integers(holders, 30))
    stacked = frame(rows, draw)
    cuts = sorted(draw(st.sets(st.integers(1, rows - 1), min_size=holders - 1,
                               max_size=holders - 1)))
    parts = [stacked.iloc[a:b].reset_index(drop=True)
             for a, b in zip([0, *cuts], [*cuts, rows])]
    return parts, draw(st.integers(-1100, 1100))


def describe(data: Any) -> Any:
    """describe(): deltaflow gives pandas' count, mean and std rows (the rest are not sums)."""
    result = data.describe()
    return result if isinstance(data, lazy._Lazy) else result.loc[["count", "mean", "std"]]


def reductions(d: Any, t: int) -> Any:
    return {
        "sum": d.sum(numeric_only=True),
        "mean": d[["i", "f", "big", "b"]].mean(),
        "count": d.count(),
        "var": d.var(numeric_only=True),
        "std": d.std(ddof=0, numeric_only=True),
        "sem": d.sem(numeric_only=True),
        "series": (d.i.sum(), d.f.mean(), d.b.sum(), d.big.var(), d.f.std(skipna=False),
                   d.i.sem(ddof=2), d.f.count(), d.f.sum(skipna=False)),
        "all": d.all(),
        "any": d.any(bool_only=True),
        "truth": [d.f.all(skipna=False), d.b.any(), (d.i > t).all(), (d.i > t).any()],
    }


def groupby(d: Any, t: int) -> Any:
    return {
        "sum": d.groupby("k").sum(numeric_only=True),
        "mean": d.groupby("g")[["i", "f", "big", "b"]].mean(),
        "count": d.groupby("k").count(),
        "size": d.groupby("g").size(),
        "derived": d.groupby(d.i // 300).f.mean(),
        "list_key": d.groupby(["k"]).i.sum(),
        "filtered": d[d.i > t].groupby("g").f.sum(),
    }


def filters(d: Any, t: int) -> Any:
    return {
        "mean": d[d.i > t].mean(numeric_only=True),
        "var": d[d.i > t].big.var(),
        "count": d[(d.i > t) & d.b].count(),
        "sum": d.f[d.f.notna() & (d.i <= t)].sum(),
        "describe": describe(d[d.i > t][["f", "big"]]),
    }


def row_wise(d: Any, t: int) -> Any:
    return {
        "arithmetic": (d.i * 2 + d.f // 3 - d.i % 7 + 1.5 / (d.g + 1) - d.g ** 2).sum(),
        "reflected": (100 - d.i + 3 * d.f + 2 ** d.g - 7 // (d.g + 1) - 50 % (d.g + 1)).mean(),
        "compare": [(d.i < t).sum(), (d.i <= t).sum(), (d.i >= t).sum(), (d.i == t).sum(),
                    (d.i != t).sum(), (d.f > d.i).sum(), (t < d.i).sum()],
        "logic": ((d.f.isna() | d.b) & ~(d.i >= 0) ^ d.f.notna()).sum(),
        "abs": (abs(-d.i) + d.f.abs()).sum(),
        "methods": (d.f.fillna(0).sum(), d.i.astype("float64").mean(), d.i.clip(-10, 10).sum(),
                    d.f.round(1).mean(), d.k.isin(["a", "b"]).sum(), d.i.between(-5, 5).sum(),
                    d.g.astype(bool).sum(), d.astype({"g": float}).g.mean()),
        "numpy": (np.sqrt(d.big).mean(), np.log1p(d.i.abs()).sum(), np.float64(2) * d.f.sum(),
                  np.exp(d.f / 1000).mean(), np.add(d.i, 1).sum(), np.log10(d.big).mean()),
        "fill_dict": d.fillna({"f": 0.5}).f.sum(),
        "columns": d.assign(twice=d.i * 2).drop(columns=["k"]).sum(),
    }


def multi_step(d: Any, t: int) -> Any:
    means = d.mean(numeric_only=True)
    return {
        "centred": ((d.big - d.big.mean()) ** 2).mean(),
        "fill_with_mean": (d.f.fillna(d.f.mean()).var(), d[["f", "i"]].fillna(means).sum()),
        "standardised": ((d.f - d.f.mean()) / d.f.std()).abs().sum(),
        "third_round": (d.i - d.i.mean()).var(),
        "frame_centred": (d[["i", "f"]] - d[["i", "f"]].mean()).abs().sum(),
        "coordinator": (d.i.sum() / d.i.count() - d.i.mean(), d.i.mean() * 2 + 1,
                        np.sqrt(d.f.var()), means["f"], d.sum(numeric_only=True)[["i", "g"]],
                        means[means > 0], means.sum(), means.var(), means.big),
        "describe": (describe(d), describe(d.big), describe(d.f + d.i)),
    }


# Each family takes a frame (lazy or real) and a threshold and returns a dict of results.
FAMILIES: dict[str, Body] = {f.__name__: f for f in (reductions, groupby, filters, row_wise,
                                                     multi_step)}
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("family", FAMILIES)
@SETTINGS
@given(split=split_frames())
def test_federated_equals_pandas_on_the_stacked_rows(family, split):
    holders, threshold = split
    body = FAMILIES[family]
    expected = body(pd.concat(holders, ignore_index=True), threshold)
    assert_same(federated(lambda d: body(d, threshold), holders), expected)


@pytest.mark.parametrize("spread,ddof", [("var", 1), ("std", 0), ("sem", 1), ("var", 3)])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(split=split_frames())
def test_grouped_spreads_equal_pandas_per_group_spreads(spread, ddof, split):
    """pandas' groupby var is a one-pass update that loses about 1e-6 of a large-mean column's
    variance; the reference is pandas' two-pass Series.var of each group's stacked rows."""
    holders, threshold = split
    stacked = pd.concat(holders, ignore_index=True)
    cases = [("k", ["i", "f", "big", "b"]), ("g", "big")]
    for key, columns in cases:
        ours = federated(lambda d: getattr(d.groupby(key)[columns], spread)(ddof=ddof), holders)
        grouped = stacked.groupby(key)[columns]
        expected = grouped.agg(lambda rows: getattr(rows, spread)(ddof=ddof))
        assert_same(ours, expected.astype("float64"))
    ours = federated(lambda d: d[d.i > threshold].groupby("g").f.var(), holders)
    kept = stacked[stacked.i > threshold]
    assert_same(ours, kept.groupby("g").f.agg(lambda rows: rows.var()).astype("float64"))


@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(split=split_frames())
def test_every_part_a_holder_sends_is_a_sum_over_its_rows(family, split):
    """Parts over several holders' rows are the sum of each one's parts: only sums leave.

    (Sums of deviations from a mean are 0 up to rounding, hence the absolute tolerance.)
    """
    holders, threshold = split
    plan = plan_of(lambda d: FAMILIES[family](d, threshold))
    aggregation = Aggregation(plan)
    for stage in range(plan.stage_count):
        inputs = aggregation.inputs_for(stage)
        each = [worker_parts(plan, stage, {"d": h}, inputs) for h in holders]
        joined = worker_parts(plan, stage, {"d": pd.concat(holders, ignore_index=True)}, inputs)
        for node, parts in joined.items():
            for name, part in parts.items():
                added = reduce(add_parts, (p[node][name] for p in each))
                assert_same(added, part, atol=1e-9)
        aggregation.add_stage(stage, each)


def test_edge_holders_one_row_filtered_empty_all_nan_and_keys_on_one_holder():
    one = pd.DataFrame({"x": [7], "y": [np.nan], "key": ["only-here"], "b": [True]})
    many = pd.DataFrame({"x": [1, 2, 3, 50], "y": [np.nan] * 4, "key": ["p", "q", None, "p"],
                         "b": [False, True, True, False]})
    body = lambda d: {  # noqa: E731
        "kept_by_one": d[d.x > 10].x.var(),  # `one` keeps its row, `many` keeps one row
        "kept_by_none": (d[d.x > 100].x.mean(), d[d.x > 100].sum(numeric_only=True),
                         d[d.x > 100].groupby("key").x.sum(), d[d.x > 100].y.std()),
        "all_nan": (d.y.mean(), d.y.var(), d.y.sum(), d.y.count(), describe(d)),
        "keys": (d.groupby("key").x.mean(), d.groupby("key").size(), d.groupby("b").x.std()),
        "single_value": (d.x.var(ddof=4), d.x.var(ddof=5), d.x.sem(ddof=5)),
    }
    assert_same(federated(body, [one, many]), body(pd.concat([one, many], ignore_index=True)))


def test_a_column_is_an_attribute_unless_pandas_has_one_of_that_name():
    holders = [pd.DataFrame({"name": [1, 2], "dtype": [3, 4], "total": [0, 1]}),
               pd.DataFrame({"name": [5], "dtype": [6], "total": [2]})]
    assert federated(lambda d: (d.name.sum(), d.dtype.sum(), d.sum().total), holders) == (8, 13, 3)
    with pytest.raises(TypeError, match="index is not supported"):
        Rows(lambda d: d.index).build()
    with pytest.raises(TypeError, match="name is not supported"):
        Rows(lambda d: d.x.name).build()


def test_dtypes_are_the_ones_pandas_gives():
    holders = [pd.DataFrame({"n": [1, 2], "b": [True, False], "k": ["x", "y"]}),
               pd.DataFrame({"n": [3], "b": [True], "k": ["z"]})]
    result = federated(lambda d: (d.n.sum(), d.b.sum(), d.n.count(), d.n.mean(),
                                  d.groupby("k").n.sum(), d.b.all(), d.all()), holders)
    n_sum, b_sum, count, mean, by_key, all_b, all_frame = result
    assert type(n_sum) is np.int64 and n_sum == 6 and type(b_sum) is np.int64 and b_sum == 2
    assert type(count) is np.int64 and type(mean) is np.float64 and mean == 2.0
    assert by_key.dtype == "int64" and list(by_key.index) == ["x", "y", "z"]
    assert by_key.index.name == "k" and str(by_key.index.dtype) == "str"
    assert type(all_b) is np.bool_ and not all_b and all_frame.dtype == bool


def test_a_variance_around_a_large_mean_does_not_cancel():
    holders = [pd.DataFrame({"x": 1e9 + np.array([0.125, 0.25])}),
               pd.DataFrame({"x": 1e9 + np.array([0.375])})]
    assert federated(lambda d: d.x.var(), holders) == pytest.approx(0.015625, rel=1e-12)


@pytest.mark.parametrize("body,stages", [
    (lambda d: d.x.sum(), 1),
    (lambda d: (d.x.mean(), d.x.count()), 1),
    (lambda d: ((d.x - d.x.mean()) ** 2).mean(), 2),
    (lambda d: d.x.std(), 2),
    (lambda d: d.groupby("k").x.var(), 2),
    (lambda d: (d.x - d.x.mean()).var(), 3),
    (lambda d: d.x.mean() * 2 + d.y.sum(), 1),
])
def test_each_aggregate_feeding_rows_takes_one_more_round(body, stages):
    assert plan_of(body).stage_count == stages


@pytest.mark.parametrize("body,message", [
    (lambda d: d.x.mode(), "mode is not supported in a federated task: it is not a sum"),
    (lambda d: d.idxmin(), "idxmin is not supported"),
    (lambda d: d.mean().max(), r"max\(\) of an aggregate is not supported"),
    (lambda d: d.iloc[0], "iloc is not supported in a federated task: it would need rows"),
    (lambda d: d.sort_values("x").x.sum(), "sort_values is not supported.*order of rows"),
    (lambda d: d.head(), "head is not supported"),
    (lambda d: d.x.apply(abs), "apply is not supported.*arbitrary code"),
    (lambda d: [v for v in d.x], "iteration is not supported"),
    (lambda d: d.x.hist(), "hist is not supported.*does not have it"),
    (lambda d: d.shape, "shape is not supported.*known only on the holders"),
    (lambda d: d.x.cumsum().sum(), "cumsum is not supported"),
    (lambda d: d[0:3], "slicing rows is not supported"),
    (lambda d: d.x[3], "selecting rows by label or position is not supported"),
    (lambda d: float(d.x.mean()), r"float\(\) is not supported"),
    (lambda d: d.x.mean() if d.x.mean() > 0 else 0, "truth testing"),
    (lambda d: len(d), r"len\(\) is not supported"),
    (lambda d: d.x.frobnicate(), "frobnicate is not supported.*does not have it"),
    (lambda d: np.maximum(d.x, 0), "numpy.maximum is not supported"),
    (lambda d: d.x - d.mean(), "combining rows with an aggregate Series is not supported.*labels"),
    (lambda d: d[d.mean() > 0], "filtering by this mask is not supported"),
    (lambda d: d.assign(m=d.mean()).x.sum(), "assigning an aggregate Series"),
    (lambda d: d.groupby("k", sort=False).x.sum(), r"groupby\(sort=False\) is not supported"),
    (lambda d: d.groupby("k", dropna=False).x.sum(), r"groupby\(dropna=False\)"),
    (lambda d: d.groupby([d.k, "x"]).x.sum(), "groupby by this value is not supported"),
    (lambda d: d.groupby("k").x.prod(), "prod is not supported"),
    (lambda d: d.groupby("k").agg(lambda g: g.sum()), "agg with a function.*arbitrary code"),
    (lambda d: d.groupby(["k", "x"]).y.median(), "over several key columns is not supported"),
    (lambda d: list(d.groupby("k")), "iterating over groups is not supported"),
    (lambda d: d.groupby("k").mean().groupby("x"), "groupby of an aggregate is not supported"),
])
def test_what_cannot_be_federated_is_refused_at_build_naming_it_and_why(body, message):
    with pytest.raises(TypeError, match=message):
        Rows(body).build()


def test_rows_of_two_datasets_are_not_combined():
    class Two(HorizontalAnalytics):
        def __init__(self):
            super().__init__(name="two")

        def dataset(self):
            return {"a": dataset.DataFrame("a.csv"), "b": dataset.DataFrame("b.csv")}

        def execute(self, a, b):
            return (a.x + b.x).sum()

    with pytest.raises(TypeError, match="combining rows of two datasets is not supported"):
        Two().build()


@pytest.mark.parametrize("body,message", [
    (lambda d: d.sum(), r"sum\(\) needs numeric columns, and \['k'\] are not"),
    (lambda d: d.groupby("x").sum(), r"sum\(\) needs numeric columns, and \['k'\] are not"),
    (lambda d: d.k.describe(), r"mean\(\) needs a numeric Series"),
    (lambda d: d[["k"]].describe(), "describe.. found no numeric column"),
])
def test_text_is_never_summed_on_a_holder(body, message):
    """pandas would concatenate text: that sum would carry every row, so a holder refuses it."""
    holders = [pd.DataFrame({"x": [1, 2], "k": ["a", "b"]}), pd.DataFrame({"x": [3], "k": ["c"]})]
    with pytest.raises(EvaluationError, match=message):
        federated(body, holders)


def test_an_unknown_operation_in_a_plan_is_refused_before_it_runs():
    graph = Graph()
    source = graph.add("source", argument="d")
    graph.add("method", (source,), name="to_csv", keywords=[])
    with pytest.raises(ValueError, match="unknown method 'to_csv' in node 1"):
        Plan(graph, 1)


def test_all_and_any_of_nullable_columns_with_missing_values():
    holders = [
        pd.DataFrame({"b": pd.array([True, None], dtype="boolean"),
                      "i": pd.array([2, None], dtype="Int64"), "f": [np.nan, 1.5]}),
        pd.DataFrame({"b": pd.array([None, True], dtype="boolean"),
                      "i": pd.array([0, 3], dtype="Int64"), "f": [0.0, np.nan]}),
    ]
    stacked = pd.concat(holders, ignore_index=True)
    for method in ("all", "any"):
        ours = federated(lambda d: getattr(d, method)(), holders)
        # Values as pandas; the dtype is numpy's bool where pandas gives its nullable one.
        pd.testing.assert_series_equal(ours, getattr(stacked, method)(), check_dtype=False)
