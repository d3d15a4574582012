"""sdk.privacy on its own: the bound each operation declares, what is refused and why, the
Skellam noise and its shares, and the calibration against dp-accounting's own accountant."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from dp_accounting import dp_event
from dp_accounting.rdp import rdp_privacy_accountant
from scipy import stats
from tasks import Rows

from sdk.analytics.graph import Graph
from sdk.analytics.plan import Plan
from sdk.privacy import DifferentialPrivacy, PrivacyRefused
from sdk.privacy.accounting import ORDERS, Cost, fewest_honest, skellam_cost
from sdk.privacy.analytics import PrivacyPlan
from sdk.privacy.bounds import Frame, Interval, bounds_of
from sdk.privacy.noise import MAX_STEP_SIGMA, Noise
from sdk.secagg import Rule
from sdk.task import TaskError

pytestmark = pytest.mark.usefixtures("seeded_noise")  # statistical tests: seeded

DP = DifferentialPrivacy(epsilon=1.0, delta=1e-6)


def plan_of(body: Callable[[Any], Any]) -> Plan:
    return Plan(*Graph.from_proto(Rows(body).build().spec.analytics))


def bound_of(body: Callable[[Any], Any]) -> Any:
    """The bound of what the task's one reduction reduces."""
    plan = plan_of(body)
    (node,) = [n for n in plan.graph.nodes if n.op == "reduce"]
    return bounds_of(plan.graph, plan.row_wise)[node.inputs[0]]


@pytest.mark.parametrize("body, bound", [
    (lambda d: d.x.clip(0, 20_000).sum(), Interval(0, 20_000)),
    (lambda d: d.x.clip(lower=-5).clip(upper=3).sum(), Interval(-5, 3)),
    (lambda d: d.x.clip(0, 10).clip(2, 4).sum(), Interval(2, 4)),
    (lambda d: d.x.between(1, 9).sum(), Interval(0, 1)),
    (lambda d: (d.x > 3).sum(), Interval(0, 1)),
    (lambda d: d.x.isin([1, 2]).sum(), Interval(0, 1)),
    (lambda d: d.x.astype(bool).sum(), Interval(0, 1)),
    (lambda d: d.x.isna().sum(), Interval(0, 1)),
    (lambda d: ((d.x > 1) & (d.y < 2)).sum(), Interval(0, 1)),
    (lambda d: d.x.clip(0, 1).fillna(5).sum(), Interval(0, 5)),
    (lambda d: (d.x.clip(0, 2) + d.y.clip(-1, 1)).sum(), Interval(-1, 3)),
    (lambda d: (d.x.clip(0, 2) - d.y.clip(-1, 1)).sum(), Interval(-1, 3)),
    (lambda d: (d.x.clip(-2, 3) * d.y.clip(-1, 4)).sum(), Interval(-8, 12)),
    (lambda d: ((d.id == 57) * d.wage.clip(0, 20_000)).sum(), Interval(0, 20_000)),
    (lambda d: (d.x.clip(0, 10) / 4).sum(), Interval(0, 2.5)),
    (lambda d: (d.x.clip(-3, 2) ** 2).sum(), Interval(0, 9)),
    (lambda d: (d.x.clip(-50, 50) % 7).sum(), Interval(0, 7)),
    (lambda d: (-d.x.clip(1, 2)).sum(), Interval(-2, -1)),
    (lambda d: d.x.clip(-3, 2).abs().sum(), Interval(0, 3)),
    (lambda d: np.log10(d.x.clip(1, 100)).sum(), Interval(0, 2)),
    (lambda d: d.x.clip(0.2, 4.6).round().sum(), Interval(-0.3, 5.1)),
    (lambda d: d.x.clip(0.5, 9.5).astype("int64").sum(), Interval(0, 10)),
    (lambda d: d.x.clip(-1, 300).astype("uint8").sum(), Interval(0, 255)),  # it wraps
    (lambda d: d[d.x.between(10, 20)].x.sum(), Interval(10, 20)),
    (lambda d: d[(d.x >= 1) & (d.x < 5)].x.sum(), Interval(1, 5)),
    (lambda d: d[(d.x >= 1) & (3 >= d.x)].x.sum(), Interval(1, 3)),
    (lambda d: d.x[d.x.between(0, 2)].sum(), Interval(0, 2)),
])
def test_each_operation_declares_its_bound(body, bound):
    assert bound_of(body) == bound


@pytest.mark.parametrize("body", [
    lambda d: d.x.sum(),
    lambda d: (d.x * 2).sum(),
    lambda d: d.x.clip(lower=0).sum(),  # one side only
    lambda d: d.x.clip(0, 1).clip(upper=d.y).sum(),  # as low as y goes
    lambda d: d.x.clip(0, 1).clip(lower=d.y).sum(),  # as high as y goes
    lambda d: d[d.x > 3].x.sum(),  # one side only
    lambda d: d[d.y.between(0, 1)].x.sum(),  # another column's bound
    lambda d: (d.x.clip(0, 1) / d.y.clip(1, 2)).sum(),
    lambda d: (d.x.clip(0, 1) // 2).sum(),
    lambda d: d.x.clip(0, 1).fillna(d.y).sum(),
    lambda d: d.x.clip(0, 1).astype(str).sum(),
    lambda d: d.x.clip(-1e300, 1e300).astype("float32").sum(),  # overflows to infinity
    lambda d: (d.x.clip(0, 1e300) ** 8).sum(),
])
def test_what_declares_no_bound_is_unbounded(body):
    bound = bound_of(body)
    assert bound is None or not bound.finite


def test_frame_bounds_follow_their_columns():
    frame = bound_of(lambda d: d[["a", "b"]].clip(0, 1).assign(c=d.x.between(1, 2))
                     .select_dtypes(include="number").sum())
    assert frame == Frame(("a", "b", "c"), {"a": Interval(0, 1), "b": Interval(0, 1),
                                            "c": Interval(0, 1)}, Interval(0, 1))
    assert bound_of(lambda d: d.clip(0, 1).sum()).columns is None


@pytest.mark.parametrize("body, words", [
    (lambda d: d.wage.sum(), "needs a bound on column 'wage': clip it"),
    (lambda d: ((d.id == 57) * d.salary).sum(), "needs a bound on column 'salary': clip it"),
    (lambda d: d[["a", "b"]].clip(0, 1).assign(c=d.c).mean(), "column 'c'"),
    (lambda d: d.x.clip(0, 1).var(), None),  # bounded: not refused
    (lambda d: d.x.count(), None),  # a count needs no bound
    (lambda d: d.groupby("dept").size(), "needs the keys it reports, declared"),
    (lambda d: d.groupby("dept", keys=["a"]).size(), None),
    (lambda d: d.x.clip(0, 1).sum(skipna=False), "skipna=False"),
    (lambda d: d.clip(0, 1).sum(), "columns are not named in the task"),
])
def test_refusals_name_what_to_change(body, words):
    if words is None:
        PrivacyPlan(plan_of(body), DP, 9)
        return
    with pytest.raises(PrivacyRefused, match=words):
        PrivacyPlan(plan_of(body), DP, 9)


def test_build_refuses_with_the_column_named():
    class Attack(Rows):
        def __init__(self, body):
            super().__init__(body)
            self.privacy = DP

    with pytest.raises(TaskError, match="sum\\(\\) .*needs a bound on column 'salary'"):
        Attack(lambda d: ((d.id == 57) * d.salary).sum()).build()
    spec = Attack(lambda d: ((d.id == 57) * d.salary.clip(0, 20_000)).sum()).build().spec
    assert (spec.privacy.epsilon, spec.privacy.delta) == (1.0, 1e-6)
    with pytest.raises(TaskError, match="keys it reports"):
        Attack(lambda d: d.groupby("dept").size()).build()


@pytest.mark.parametrize("epsilon, delta", [(0.1, 1e-6), (1.0, 1e-6), (10.0, 1e-5)])
def test_calibration_spends_the_budget_by_dp_accountings_own_accountant(epsilon, delta):
    plan = PrivacyPlan(plan_of(lambda d: d[["a", "b"]].clip(0, 100).describe()),
                       DifferentialPrivacy(epsilon, delta), 9)
    accountant = rdp_privacy_accountant.RdpAccountant(list(ORDERS))  # where Skellam's bound holds
    for release, noise in zip(plan.releases, plan.noise.values(), strict=True):
        # In the noise's integer steps; a coarser step than 1 rounds by one step more.
        steps = release.units(9) / noise.step + (noise.step > 1)
        accountant.compose(dp_event.ZCDpEvent(steps**2 / (2 * noise.variance),
                                              3 * steps / (2 * noise.variance)))
    spent = accountant.get_epsilon(delta)
    assert spent == pytest.approx(plan.epsilon(), rel=1e-9)
    assert 0.99 * epsilon <= spent <= epsilon
    assert len(plan.releases) == 12  # mean: sum, count; describe: count, sum, squares, deviations
    steps = plan.cost(0) + plan.cost(1)
    assert (steps.rho, steps.xi) == pytest.approx((plan.cost().rho, plan.cost().xi))


def test_skellam_cost_is_the_papers_bound():
    assert skellam_cost(2.0, 3.0, 8.0) == Cost(4 / 16, 9 / 16)
    assert Cost(1, 2) + Cost(3, 4) == Cost(4, 6)
    assert Cost(1, 2).times(3) == Cost(3, 6)


@pytest.mark.parametrize("sigma, shares", [(40.0, 1), (40.0, 3), (MAX_STEP_SIGMA, 2),
                                           (3e6 * MAX_STEP_SIGMA, 2)])
def test_noise_shares_sum_to_the_whole_variance(sigma, shares):
    """Up to the largest variance a step holds, where numpy's sampler is still exact."""
    noise = Noise.for_sigma(sigma)
    runs = 4000
    total = sum(np.array(noise.add_exact([0] * runs, shares), dtype=object)
                for _ in range(shares)).astype(float)
    low, high = stats.chi2.ppf([1e-7, 1 - 1e-7], runs) / runs
    assert low < np.mean(total**2) / noise.std() ** 2 < high
    assert abs(total.mean()) < 5.5 * noise.std() / math.sqrt(runs)
    assert noise.std() == pytest.approx(sigma, rel=1e-12)


def test_noise_on_values_past_int64_is_exact_apart_from_the_noise():
    big = 3 * 2**63 + 12_345
    noise = Noise.for_sigma(5.0 * MAX_STEP_SIGMA)  # a coarser step: 10
    assert noise.step == 10
    (noised,) = noise.add_exact([big], 1)
    assert noised % 10 == 0 and abs(noised - big) < 8 * noise.std()
    assert Noise.for_sigma(5.0).step == 1


def test_fewest_honest_is_the_secure_aggregation_threshold():
    assert [fewest_honest(Rule(2), n) for n in (2, 3, 4, 5, 10)] == [2, 2, 3, 3, 6]
    assert fewest_honest(Rule(4), 5) == 4


@pytest.mark.parametrize("epsilon, delta", [(0, 1e-6), (-1, 1e-6), (math.inf, 1e-6), (1, 0),
                                            (1, 1), ("1", 1e-6), (True, 1e-6)])
def test_a_malformed_privacy_is_refused(epsilon, delta):
    with pytest.raises(PrivacyRefused):
        DifferentialPrivacy(epsilon, delta)


def test_the_layout_depends_on_the_task_alone():
    plan = PrivacyPlan(plan_of(lambda d: d[["a", "b"]].clip(0, 1).sum(numeric_only=True)),
                       DP, 9)
    (node,) = plan.plan.stage_of
    fixed = plan.fix_layout(node, {"sum": pd.Series({"a": 3})})  # 'b' was text here
    assert fixed["sum"].to_dict() == {"a": 3.0, "b": 0.0} and fixed["sum"].dtype == "float64"
