"""Statistics beyond sums equal pandas on the stacked rows: value_counts, histogram, crosstab,
nunique over declared values, skew, kurt, cov, corr, agg lists, groupby on several keys.

Each example splits a frame over 2 to 5 holders (empty and one-row holders too) and compares
the federated result, plain and under secure aggregation (in this process), with pandas. Where
pandas' own algorithm is less exact than the federated one (its one-pass moments of a column
such as 1e9 + k/8), the reference is pandas on the column shifted by 1e9, which every one of
these statistics ignores. Then the `min_rows` rule per value, bin and pair of columns, as
attacks; read in chunks; and differential privacy's sensitivities and refusals.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tasks import Rows
from test_chunks import check_chunks
from test_pandas import assert_same, federated, frame, plan_of
from test_secure_analytics import secure_in_process

from sdk import pandas as lazy
from sdk.analytics.plan import worker_parts
from sdk.pandas import UnsupportedOperation
from sdk.privacy import DifferentialPrivacy, PrivacyRefused
from sdk.privacy.analytics import PrivacyPlan

# pandas' own reference warns where numpy.cov divides by n - ddof <= 0, as it should.
pytestmark = pytest.mark.filterwarnings("ignore:Degrees of freedom:RuntimeWarning",
                                        "ignore:divide by zero:RuntimeWarning",
                                        "ignore:invalid value:RuntimeWarning")
SETTINGS = settings(max_examples=10, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DECLARED = ["a", "b", "z"]  # "z" never occurs


def is_lazy(d: Any) -> bool:
    return isinstance(d, lazy._Lazy)


def ranked(counts: pd.Series) -> pd.Series:
    """pandas' value_counts with ties in order of value (pandas orders ties by where they first
    appear in the rows, which means nothing across holders)."""
    return counts.sort_index().sort_values(ascending=False, kind="stable")


def value_counts(s: Any, values: list[Any] | None = None, **params: Any) -> Any:
    if is_lazy(s):
        return s.value_counts(values=values, **params)
    counts = s[s.isin(values)] if values is not None else s
    counts = counts.value_counts(**params)
    if values is not None:
        counts = counts.reindex(pd.Index(values, name=s.name), fill_value=0)
    return ranked(counts)


def nunique(s: Any, values: list[Any]) -> Any:
    return s.nunique(values=values) if is_lazy(s) else np.int64(s[s.isin(values)].nunique())


def histogram(s: Any, bins: list[float]) -> Any:
    if is_lazy(s):
        return lazy.histogram(s, bins=bins)
    return np.histogram(s.to_numpy(dtype=float, na_value=np.nan), bins=bins)


def counted(d: Any, t: int) -> dict[str, Any]:
    return {
        "value_counts": (value_counts(d.k), value_counts(d.g), value_counts(d.b),
                         value_counts(d.i[d.i > t] % 5), value_counts(d.f, normalize=True)),
        "frame": (value_counts(d[["k", "g"]]), value_counts(d[["b"]], normalize=True)),
        "declared": (value_counts(d.k, DECLARED), value_counts(d.g, [3, 0, 9])),
        "nunique": (nunique(d.k, DECLARED), nunique(d.g, [0, 1, 2, 3]), nunique(d.b, [True])),
        "histogram": (histogram(d.i, [-1000, -1, 0, 10, 1000]), histogram(d.f, [-5.5, 0, 0.25]),
                      histogram(d.b, [0, 0.5, 1])),
        "crosstab": (lazy.crosstab(d.k, d.g) if is_lazy(d) else pd.crosstab(d.k, d.g),
                     lazy.crosstab(d.b, d.i > t) if is_lazy(d) else pd.crosstab(d.b, d.i > t)),
        "two_keys": (d.groupby(["k", "g"]).size(), d.groupby(["g", "b"]).i.sum(),
                     d.groupby(["k", "b"])[["i", "f"]].mean(), d.groupby(["g", "k"]).f.count(),
                     d[d.i > t].groupby(["b", "g"]).f.sum()),
    }


def moments(d: Any, t: int) -> dict[str, Any]:
    return {
        "skew": (d.i.skew(), d.b.skew(), d[d.i > t].f.skew(), d[["f", "big", "b"]].skew(),
                 d.f.skew(skipna=False)),
        "kurt": (d.f.kurt(), d[["i", "big"]].kurt(), d[d.i > t].i.kurtosis()),
        "cov": (d[["i", "f", "big", "b"]].cov(), d[["i", "big"]].cov(ddof=0, min_periods=3),
                d.f.cov(d.i), d.i.cov(d.big, ddof=2), d.f.cov(d.f * 2)),
        "corr": (d[["i", "f", "big", "b"]].corr(), d[["f", "big"]].corr(min_periods=4),
                 d.f.corr(d.big), d[d.i > t].f.corr(d[d.i > t].i)),
    }


def aggregated(d: Any, t: int) -> dict[str, Any]:
    return {
        "series": (d.i.agg(["sum", "mean", "count"]), d.f.agg(["mean", "std", "skew"]),
                   (d.i * 2).aggregate(["sum", "var"]), d.f.agg("sum")),
        "frame": (d[["i", "f", "b"]].agg(["sum", "mean"]), d[["i", "big"]].agg(["count", "std"]),
                  d.agg({"i": "sum", "f": "mean"}), d.agg({"i": ["sum", "mean"], "f": "count"})),
        "grouped": (d.groupby("k")[["i", "f"]].agg(["sum", "mean"]),
                    d.groupby("g").f.agg(["count", "mean", "std"]),
                    d.groupby("k").agg({"i": "sum", "f": "mean"}),
                    d.groupby("g").agg({"i": "sum", "f": ["mean", "count"]}),
                    d.groupby(["k", "g"]).i.agg(["sum", "count"])),
    }


def shifted(stacked: pd.DataFrame) -> pd.DataFrame:
    """The reference frame for moments: 'big' less 1e9 (exact: k/8), so that pandas' one-pass
    moments are exact too; skew, kurt, cov and corr do not change under a shift."""
    return stacked.assign(big=stacked.big - 1e9)


FAMILIES = {"counted": counted, "moments": moments, "aggregated": aggregated}


@st.composite
def split_frames(draw: Any) -> tuple[list[pd.DataFrame], int]:
    """Rows split over 2 to 5 holders, some of which may hold one row or none."""
    holders = draw(st.integers(2, 5))
    rows = draw(st.integers(1, 24))
    stacked = frame(rows, draw)
    cuts = sorted(draw(st.lists(st.integers(0, rows), min_size=holders - 1,
                                max_size=holders - 1)))
    return ([stacked.iloc[a:b].reset_index(drop=True) for a, b in zip([0, *cuts], [*cuts, rows])],
            draw(st.integers(-1100, 1100)))


def expected_of(family: str, holders: list[pd.DataFrame], threshold: int) -> Any:
    stacked = pd.concat(holders, ignore_index=True)
    if family != "counted":  # moments' reference: shifted; agg's has no higher moment of big
        stacked = shifted(stacked)
    return FAMILIES[family](stacked, threshold)


@pytest.mark.parametrize("family", FAMILIES)
@SETTINGS
@given(split=split_frames())
def test_federated_statistics_equal_pandas_on_the_stacked_rows(family, split):
    holders, threshold = split
    ours = federated(lambda d: FAMILIES[family](d, threshold), holders)
    assert_same(ours, expected_of(family, holders, threshold), atol=1e-9)


@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=4, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(split=split_frames())
def test_under_secure_aggregation_too(family, split):
    holders, threshold = split
    ours = secure_in_process(plan_of(lambda d: FAMILIES[family](d, threshold)),
                             [{"d": h} for h in holders])
    assert_same(ours, expected_of(family, holders, threshold), atol=1e-6)


def test_one_row_has_no_spread_whatever_the_rounding_of_its_mean():
    """Securely summed, 1e9 + 1/8's mean comes back one ulp off, so its deviation is 1e-7 and
    its square rounds to 0 in fixed point: the centred cross product came out negative, and a
    one-row covariance -inf where pandas' is NaN (found by hypothesis in CI)."""
    one = pd.DataFrame({"i": [0], "f": [0.0], "big": [1e9 + 0.125], "b": [False]})
    for body in (lambda d: d.cov(), lambda d: d.corr(), lambda d: d.cov(ddof=0),
                 lambda d: d.big.cov(d.i), lambda d: d.big.corr(d.f)):
        ours = secure_in_process(plan_of(body), [{"d": one.iloc[:0]}, {"d": one}])
        assert_same(ours, body(one), atol=1e-6)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(split=split_frames(), edges=st.lists(st.integers(-1200, 1200), min_size=2, max_size=6,
                                            unique=True).map(sorted))
def test_histogram_equals_numpy_on_the_stacked_rows(split, edges):
    holders, _ = split
    stacked = pd.concat(holders, ignore_index=True)
    for column, bins in (("i", edges), ("f", [e / 2 for e in edges]), ("g", [0, 1, 1, 3])):
        counts, returned = federated(
            lambda d, column=column, bins=bins: lazy.histogram(d[column], bins=bins), holders)
        expected, numpy_edges = np.histogram(stacked[column].to_numpy(float), bins=bins)
        np.testing.assert_array_equal(counts, expected)
        assert counts.dtype == expected.dtype
        np.testing.assert_array_equal(returned, numpy_edges)


def test_two_steps_for_centred_statistics_and_one_for_counts():
    assert plan_of(lambda d: (d.x.value_counts(), lazy.crosstab(d.a, d.b),
                              lazy.histogram(d.x, [0, 1]), d.groupby(["a", "b"]).x.sum())
                   ).stage_count == 1
    for body in (lambda d: d.x.skew(), lambda d: d.corr(), lambda d: d.x.cov(d.y),
                 lambda d: d.groupby(["a", "b"]).x.std(), lambda d: d.x.agg(["sum", "kurt"])):
        assert plan_of(body).stage_count == 2


def test_declared_keys_of_several_columns_are_tuples_and_every_one_is_reported():
    holders = [pd.DataFrame({"a": ["x", "y", "x"], "b": [1, 2, 1], "v": [1.0, 2.0, 3.0]}),
               pd.DataFrame({"a": ["y", "q"], "b": [2, 1], "v": [4.0, 5.0]})]
    ours = federated(lambda d: d.groupby(["a", "b"], keys=[("x", 1), ("y", 2), ("x", 9)]).v.sum(),
                     holders)
    index = pd.MultiIndex.from_tuples([("x", 1), ("x", 9), ("y", 2)], names=["a", "b"])
    pd.testing.assert_series_equal(ours, pd.Series([4.0, 0.0, 6.0], index=index, name="v"))
    counts = federated(lambda d: d[["a", "b"]].value_counts(values=[("q", 9), ("x", 1)]),
                       holders)
    index = pd.MultiIndex.from_tuples([("x", 1), ("q", 9)], names=["a", "b"])
    pd.testing.assert_series_equal(counts, pd.Series([2, 0], index=index, name="count"))
    table = federated(lambda d: lazy.crosstab(d.a, d.b, row_values=["x", "q", "w"],
                                              column_values=[1, 2]), holders)
    expected = pd.DataFrame([[1, 0], [0, 0], [2, 0]], index=pd.Index(["q", "w", "x"], name="a"),
                            columns=pd.Index([1, 2], name="b"))
    pd.testing.assert_frame_equal(table, expected)


# The min_rows rule, as attacks: each reaches for one row's value, and gets the answer for no row.

ROWS = pd.DataFrame({"id": np.arange(1, 13), "salary": 1000.0 + np.arange(12) * 10,
                     "dept": ["a"] * 6 + ["b"] * 5 + ["c"],
                     "bonus": [np.nan] * 9 + [5.0, 6.0, 7.0]})


def parts_of(body: Any, frame: pd.DataFrame, min_rows: int, inputs: dict | None = None) -> Any:
    plan = plan_of(body)
    return worker_parts(plan, 0, {"d": frame}, inputs or {}, min_rows)


def test_a_value_or_bin_of_fewer_rows_than_min_rows_counts_as_empty():
    """value_counts of an id, a histogram bin around one salary, a crosstab cell of one row:
    each counts one row (with min_rows 1, the attack works); under min_rows 3, none."""
    for body in (lambda d: d.id.value_counts(), lambda d: d.dept.value_counts(values=["c"]),
                 lambda d: lazy.histogram(d.salary, bins=[1049, 1051, 2000]),
                 lambda d: lazy.crosstab(d.dept, d.id > 10)):
        (exposed,) = parts_of(body, ROWS, min_rows=1).values()
        assert (exposed["size"] == 1).any()
        (parts,) = parts_of(body, ROWS, min_rows=3).values()
        size = parts["size"]
        assert ((size == 0) | (size >= 3)).all(), size
    (bins,) = parts_of(lambda d: lazy.histogram(d.salary, bins=[1049, 1051, 2000]), ROWS,
                       min_rows=3).values()
    assert list(bins["size"]) == [0, 6]  # the bin of one row is empty; the other keeps its 6


def test_a_pair_of_columns_sharing_fewer_rows_than_min_rows_is_empty():
    """'bonus' is present in 3 rows, 'sparse' in 4, both in 1 (row 9): the pair's sum would be
    that row's bonus. Under min_rows 3 every part of that pair is 0; other pairs are kept."""
    frame = ROWS.assign(sparse=[np.nan] * 6 + [1.0, 2.0, 3.0, 4.0, np.nan, np.nan])
    body = lambda d: d[["salary", "bonus", "sparse"]].corr()
    (exposed,) = parts_of(body, frame, min_rows=1).values()
    assert exposed["sum"].loc["bonus", "sparse"] == 5.0  # row 9's bonus: what the rule stops
    (parts,) = parts_of(body, frame, min_rows=3).values()
    assert parts["count"].loc["bonus", "sparse"] == 0 and parts["sum"].loc["bonus", "sparse"] == 0
    assert parts["count"].loc["salary", "bonus"] == 3
    assert parts["sum"].loc["bonus", "salary"] == 5.0 + 6.0 + 7.0


@pytest.mark.parametrize("family", ["counted", "moments"])
@settings(max_examples=3, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), chunk_rows=st.integers(2, 7), min_rows=st.sampled_from([1, 3]))
def test_read_in_chunks_a_table_gives_what_it_gives_whole(family, data, chunk_rows, min_rows):
    """The min_rows rule by the whole table's counts of values, bins and pairs, never a
    chunk's."""
    table = frame(data.draw(st.integers(0, 16)), data.draw)
    threshold = data.draw(st.integers(-1100, 1100))
    check_chunks(lambda d: FAMILIES[family](d, threshold), table, ".csv", chunk_rows, min_rows)


# Differential privacy: counts are count-like, moments need bounds, pairwise products refused.

def privacy_plan(body: Any) -> PrivacyPlan:
    return PrivacyPlan(plan_of(body), DifferentialPrivacy(1.0, 1e-6), 9)


def test_under_dp_counts_per_value_and_bin_have_sensitivity_one():
    plan = privacy_plan(lambda d: (d.k.value_counts(values=["a", "b"]),
                                   lazy.histogram(d.x, bins=[0, 1, 2]),
                                   lazy.crosstab(d.k, d.b, row_values=["a"], column_values=[1])))
    assert {(r.part, r.sensitivity) for r in plan.releases} == {("size", 1.0)}
    assert len(plan.releases) == 3


def test_under_dp_skew_and_kurt_take_the_bound_to_the_third_and_fourth_power():
    plan = privacy_plan(lambda d: d.x.clip(0, 2).kurt())
    sensitivity = {r.part: r.sensitivity for r in plan.releases if r.node == plan.plan.output}
    assert sensitivity == {"count": 1.0, "deviations": 2.0, "squares": 4.0, "cubes": 8.0,
                           "fourths": 16.0}
    with pytest.raises(PrivacyRefused, match="needs a bound on column 'x'"):
        privacy_plan(lambda d: d.x.skew())


@pytest.mark.parametrize("body,message", [
    (lambda d: d[["x", "y"]].clip(0, 1).corr(), "pairwise_mean.* is refused: its parts are"),
    (lambda d: d.x.clip(0, 1).cov(d.y.clip(0, 1)), "is refused"),
    (lambda d: d.k.value_counts(), r"value_counts\(\) .*needs the keys it reports"),
    (lambda d: lazy.crosstab(d.k, d.b), r"crosstab\(\) .*needs the keys"),
    (lambda d: d.groupby(["k", "b"]).size(), "needs the keys it reports"),
])
def test_under_dp_what_has_no_sensitivity_is_refused_at_build(body, message):
    with pytest.raises(PrivacyRefused, match=message):
        privacy_plan(body)


@pytest.mark.parametrize("body,message", [
    (lambda d: d.k.value_counts(sort=False), r"value_counts\(sort=False\).*first appear"),
    (lambda d: d.k.value_counts(dropna=False), r"dropna=False.*fill them first"),
    (lambda d: d.k.nunique(), "nunique without values.*would count twice.*values="),
    (lambda d: d.nunique(), "nunique is not supported.*values="),
    (lambda d: d.corr(method="spearman"), "spearman.*rank"),
    (lambda d: d.x.corr(d.mean()), "corr with this value"),
    (lambda d: lazy.histogram(d.x, bins=10), "bins.*edges.*range"),
    (lambda d: lazy.histogram(d.x, bins=[3, 1]), "edges, increasing"),
    (lambda d: lazy.crosstab(d.k, d.b, row_values=["a"]), "row_values and column_values both"),
    (lambda d: d.agg([np.mean]), "agg with a function.*'mean' rather than np.mean"),
    (lambda d: d.x.agg(["sum", "head"]), r"agg\('head'\).*name a reduction"),
    (lambda d: d.x.agg(["prod"]), "prod is not supported"),
    (lambda d: d.groupby(["k", "b"], keys=["a"]).size(), "tuple of 2 values"),
    (lambda d: d.groupby(["k", "k"]).size(), "a column twice"),
])
def test_what_stays_out_is_refused_at_build_with_the_reason(body, message):
    with pytest.raises(UnsupportedOperation, match=message):
        Rows(body).build()
