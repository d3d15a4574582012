"""Federated pandas under secure aggregation: every stage's parts go through the whole protocol
(masks, shares, unmasking) in this process and the result equals pandas on the stacked rows
within the fixed point's precision, with pandas' dtypes, labels and missing values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from test_pandas import FAMILIES, SETTINGS, assert_same, plan_of, split_frames

from sdk import values
from sdk.analytics import secure
from sdk.analytics.plan import Aggregation, Plan, worker_parts
from sdk.secagg import Rule
from sdk.secagg.fixedpoint import FixedPointOverflow, decode_wide, encode_wide
from sdk.secagg.local import run_local

PRECISION = 9


def secure_in_process(plan: Plan, holders: list[dict], drop: dict | None = None) -> object:
    """Every stage summed securely over `holders`; `drop` silences workers from a phase on."""
    aggregation = Aggregation(plan)
    for stage in range(plan.stage_count):
        inputs = aggregation.inputs_for(stage)
        parts = [worker_parts(plan, stage, frames, inputs) for frames in holders]
        layouts = [values.decode(values.encode(secure.layout(p))) for p in parts]  # as sent
        union = secure.union(layouts)
        vectors = {u: secure.encode(p, union, PRECISION, len(holders)) for u, p in enumerate(parts)}
        assert {v.size for v in vectors.values()} == {secure.vector_length(union)}
        server, total = run_local(vectors, Rule(2), drop=drop)
        summed_union = secure.union([layouts[u] for u in sorted(server.u3)])
        summed = secure.restrict(secure.decode(total, union, PRECISION), summed_union)
        aggregation.add_stage(stage, [summed])
    return values.decode(values.encode(aggregation.result()))


@pytest.mark.parametrize("family", FAMILIES)
@settings(SETTINGS, max_examples=25)  # test_pandas covers the arithmetic over 60 splits a family
@given(split=split_frames())
def test_secure_federated_equals_pandas_on_the_stacked_rows(family, split):
    holders, threshold = split
    body = FAMILIES[family]
    expected = body(pd.concat(holders, ignore_index=True), threshold)
    ours = secure_in_process(plan_of(lambda d: body(d, threshold)), [{"d": h} for h in holders])
    assert_same(ours, expected, atol=1e-6)


def test_a_dropped_holder_leaves_its_rows_out_of_the_sum():
    frames = [pd.DataFrame({"x": [1.5, 2.0, 4.0], "g": ["a", "b", "a"]}) for _ in range(4)]
    frames[3]["x"] = 100.0
    frames[3]["g"] = "only-here"  # its label reaches the layout, not the result
    plan = plan_of(lambda d: (d.x.sum(), d.groupby("g").x.mean()))
    total, means = secure_in_process(plan, [{"d": f} for f in frames], drop={"mask": {3}})
    assert total == pytest.approx(3 * 7.5)
    assert means["a"] == pytest.approx(2.75) and list(means.index) == ["a", "b"]


def test_specials_propagate_as_in_pandas():
    holders = [pd.DataFrame({"x": [np.inf, 1.0, 2.0], "y": [np.nan, 1.0, 1.0]}),
               pd.DataFrame({"x": [-np.inf, 1.0, 2.0], "y": [1.0, 1.0, 1.0]}),
               pd.DataFrame({"x": [np.inf, 1.0, 2.0], "y": [1.0, 1.0, 1.0]})]
    plan = plan_of(lambda d: (d.x.sum(), d.y.sum(skipna=False), d.y.sum(), d.x[d.x < 5].sum()))
    stacked = pd.concat(holders)
    with np.errstate(invalid="ignore"):  # inf - inf, in pandas' own sum
        expected = (stacked.x.sum(), stacked.y.sum(skipna=False), stacked.y.sum(),
                    stacked.x[stacked.x < 5].sum())
    assert_same(secure_in_process(plan, [{"d": h} for h in holders]), expected)


def test_wide_encoding_keeps_integers_exact_and_refuses_what_would_overflow():
    ints = np.array([2**62, -(2**62), 7, -1], dtype=np.int64)
    assert decode_wide(encode_wide(ints, 0, 3) * np.uint64(3)) == [3 * int(i) for i in ints]
    floats = np.array([1e18, -2.5e-9, 123.456789123])
    assert decode_wide(encode_wide(floats, 9, 2)) == [int(1e27), -2, 123456789123]  # rint: even
    with pytest.raises(FixedPointOverflow, match=r"^a value does not fit.*2\^95") as refused:
        encode_wide(np.array([0.0, 1e30]), 9, 3)
    assert refused.value.index == 1 and "1e+30" not in str(refused.value)


def test_an_overflow_names_the_part_and_not_its_value():
    parts = {5: {"sum": pd.Series([1.0, 987654.321e25], index=["a", "b"]), "count": np.int64(4)}}
    with pytest.raises(FixedPointOverflow, match=r"^the 'sum' part of reduction node 5: a value "
                                                 r"does not fit.*lower the task's precision"):
        secure.encode(parts, secure.layout(parts), PRECISION, 3)
