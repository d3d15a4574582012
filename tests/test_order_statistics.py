"""Order statistics (quantile, median, min, max) by bisection on summed counts, in process:
equal to pandas on the stacked rows over 2-5 holders, the min_rows rule, and a holder's
defences: its policy's reveal_order_statistics and max_order_probes at admission, and at each
step a search that stays on its path within the cap. Under differential privacy the search is
noisy, approximate, and paid from the budget step by step."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_pandas import assert_same, federated, plan_of

from sdk import dataset, values
from sdk.analytics import order
from sdk.analytics.errors import EvaluationError
from sdk.analytics.graph import Graph
from sdk.analytics.plan import Aggregation, Plan, worker_parts
from sdk.pandas import UnsupportedOperation
from sdk.privacy import DifferentialPrivacy
from sdk.privacy.accounting import epsilon
from sdk.proto import values_pb2
from sdk.task import HorizontalAnalytics, TaskError
from sdk.trust import Identity
from worker.analytics import AnalyticsJob
from worker.budget import BudgetExceeded, Budgets, PrivacyLedger
from worker.datasets import DataDir
from worker.order import SearchGuard
from worker.policy import Policy, PolicyRefusal
from worker.sources import Catalog

MEDIAN_PROBES = order.THRESHOLDS * (1 + 2 * (order.STEPS - 1))  # 3,840


@st.composite
def split(draw: Any) -> list[pd.DataFrame]:
    """Rows with ties, NaN, ints, bools and extreme floats over 2 to 5 holders (one-row holders
    included)."""
    holders = draw(st.integers(2, 5))
    rows = draw(st.integers(holders, 24))
    column = lambda strategy: draw(st.lists(strategy, min_size=rows, max_size=rows))
    floats = st.sampled_from([-1e308, -2.5, -0.0, 0.0, 5e-324, 0.125, 1.0, 3.0, 1e300, np.nan,
                              np.inf])
    stacked = pd.DataFrame({
        "i": pd.Series(column(st.integers(-5, 5)), dtype="int64"),  # many ties
        "f": pd.Series(column(st.one_of(floats, st.floats(-1e6, 1e6))), dtype="float64"),
        "b": pd.Series(column(st.booleans()), dtype="bool"),
        "g": pd.Series(column(st.sampled_from([0, 1, 2, np.nan])), dtype="float64"),
    })
    cuts = sorted(draw(st.lists(st.integers(1, rows - 1), min_size=holders - 1,
                                max_size=holders - 1, unique=True)))
    return [stacked.iloc[a:b].reset_index(drop=True)
            for a, b in zip([0, *cuts], [*cuts, rows])]


BODIES = {
    "median": lambda d: (d.i.median(), d.f.median(), d.b.median()),
    "quantile": lambda d: (d.f.quantile(0.3), d.i.quantile([0, 0.1, 0.5, 0.999, 1])),
    "frame quantile": lambda d: (d[["i", "f"]].quantile(0.75),
                                 d[["i", "f"]].quantile([0.25, 0.5])),
    "extremes": lambda d: (d.i.min(), d.f.max(), d.b.min(), d[["i", "f", "b"]].min(),
                           d.max(), d.median()),
    "grouped": lambda d: (d.groupby("g").f.median(), d.groupby("g").i.min(),
                          d.groupby(d.i % 3).f.quantile(0.25)),
}


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(holders=split())
def test_order_statistics_equal_pandas_on_the_stacked_rows(body, holders):
    assert_same(federated(body, holders), body(pd.concat(holders, ignore_index=True)))


def test_a_float64_statistic_takes_eight_steps_and_its_thresholds_are_counted():
    plan = plan_of(lambda d: (d.x.median(), d.x.min()))
    assert plan.stage_count == order.STEPS == 8
    searches = [n.params for n in plan.graph.nodes if n.params.get("kind") == order.KIND]
    assert sum(order.probes(p) for p in searches if p["stat"] == "median") == MEDIAN_PROBES
    assert sum(order.probes(p) for p in searches if p["stat"] == "min") == 8 * 256


def test_an_empty_column_and_one_all_nan_holder():
    holders = [pd.DataFrame({"x": [np.nan, np.nan]}), pd.DataFrame({"x": [2.0, 1.0, 7.0]})]
    body = lambda d: (d.x.median(), d.x.quantile([0.5, 1]), d.x.min(), d.x[d.x > 9].max())
    assert_same(federated(body, holders), body(pd.concat(holders, ignore_index=True)))


def test_a_holder_under_min_rows_counts_as_empty():
    """Its column's values are too few: it sends the counts of no values, as every reduction."""
    holders = [{"d": pd.DataFrame({"x": [100.0, 200.0]})},
               {"d": pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0]})}]
    plan = plan_of(lambda d: (d.x.max(), d.x.median()))
    aggregation = Aggregation(plan)
    for stage in range(plan.stage_count):
        inputs = aggregation.inputs_for(stage)
        aggregation.add_stage(stage, [worker_parts(plan, stage, h, inputs, min_rows=3)
                                      for h in holders])
    assert aggregation.result() == (4.0, 2.5)


def test_text_and_bool_quantiles_are_refused_naming_the_column():
    holders = [pd.DataFrame({"k": ["a", "b"], "b": [True, False]})] * 2
    with pytest.raises(EvaluationError, match="column 'k' is"):
        federated(lambda d: d.k.min(), holders)
    with pytest.raises(EvaluationError, match="quantile\\(\\) of bool column 'b'"):
        federated(lambda d: d.b.quantile(0.5), holders)


# A holder's defences.

class Task(HorizontalAnalytics):
    def __init__(self, body: Any, privacy: DifferentialPrivacy | None = None) -> None:
        super().__init__(name="order", min_clients=2, max_clients=3, privacy=privacy)
        self.body = body

    def dataset(self):
        return {"d": dataset.DataFrame("d.csv")}

    def execute(self, d):
        return self.body(d)


ANALYST = Identity("alice", "analyst", 1, 0.0)


def policy(text: str) -> Policy:
    return Policy.parse(f'[analytics]\nusers = ["*"]\n{text}')


def test_a_holder_reveals_order_statistics_only_where_its_policy_says_so():
    spec = Task(lambda d: d.x.median()).build().spec
    with pytest.raises(PolicyRefusal, match=r"\[analytics\] reveal_order_statistics"):
        policy("").check(spec, ANALYST)
    policy("reveal_order_statistics = true").check(spec, ANALYST)
    dp = Task(lambda d: d.x.median(), DifferentialPrivacy(1.0, 1e-6)).build().spec
    policy("").check(dp, ANALYST)  # under DP, by a noisy search
    Policy.parse('[analytics]\nusers = ["*"]').check(Task(lambda d: d.x.mean()).build().spec,
                                                      ANALYST)


def test_a_task_needing_more_thresholds_than_the_cap_is_refused_at_admission():
    spec = Task(lambda d: d.x.median()).build().spec
    allowed = f"reveal_order_statistics = true\nmax_order_probes = {MEDIAN_PROBES}"
    policy(allowed).check(spec, ANALYST)
    with pytest.raises(PolicyRefusal, match=rf"need {MEDIAN_PROBES} thresholds.*"
                                            r"\[analytics\] max_order_probes"):
        policy(allowed.replace(str(MEDIAN_PROBES), str(MEDIAN_PROBES - 1))).check(spec, ANALYST)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> list[DataDir]:
    """Three holders of 400 values each, spread over [0, 1000)."""
    dirs = []
    for i in range(3):
        folder = Path(tmp_path_factory.mktemp(f"order{i}"))
        rng = np.random.default_rng(i)
        pd.DataFrame({"x": rng.uniform(0, 1000, 400).round(3)}).to_csv(folder / "d.csv",
                                                                      index=False)
        dirs.append(DataDir(folder))
    return dirs


def stacked(folders: list[DataDir]) -> pd.DataFrame:
    return pd.concat([pd.read_csv(f.root / "d.csv") for f in folders], ignore_index=True)


def jobs_of(task: Task, folders: list[DataDir], max_probes: int = MEDIAN_PROBES,
            chunk_rows: int = 100_000) -> list[AnalyticsJob]:
    spec = task.build().spec
    return [AnalyticsJob(spec, Catalog(f), 1, chunk_rows, max_probes) for f in folders]


def released(job: AnalyticsJob, stage: int, inputs: dict[int, Any]) -> Any:
    """What a holder sends without secure aggregation (all of its noise under DP)."""
    message = values_pb2.Value()
    message.ParseFromString(job.compute(stage, values.decode(values.encode(inputs))))
    return {int(node): parts for node, parts in values.decode(message).items()}


def run(jobs: list[AnalyticsJob]) -> Any:
    aggregation = Aggregation(jobs[0].plan)
    for stage in range(jobs[0].plan.stage_count):
        inputs = aggregation.inputs_for(stage)
        aggregation.add_stage(stage, [released(job, stage, inputs) for job in jobs])
    return aggregation.result()


def test_the_jobs_find_the_exact_median_within_the_cap(folders):
    assert run(jobs_of(Task(lambda d: d.x.median()), folders)) == stacked(folders).x.median()


def test_tables_read_in_chunks_give_the_same_statistics(folders):
    body = lambda d: (d.x.quantile([0.1, 0.9]), d.x.min(), d[d.x > 500].x.max())
    ours = run(jobs_of(Task(body), folders, max_probes=10**5, chunk_rows=97))
    assert_same(ours, body(stacked(folders)))


def test_a_coordinator_asking_for_steps_again_goes_past_the_cap_and_is_refused(folders):
    """A step asked for again counts its thresholds again (without secure aggregation nothing
    else stops a second count): past the cap the holder refuses, and the search cannot end."""
    (job,) = jobs_of(Task(lambda d: d.x.median()), folders[:1])
    aggregation = Aggregation(job.plan)
    for stage in range(4):
        inputs = aggregation.inputs_for(stage)
        aggregation.add_stage(stage, [released(job, stage, inputs)])
    served = 256 + 3 * 512
    for _ in range((MEDIAN_PROBES - served) // 512):  # what the cap leaves: 4 more steps
        released(job, 3, inputs)
    with pytest.raises(EvaluationError, match=r"to 4352, past this holder's cap of 3840 per "
                                              r"column \(\[analytics\] max_order_probes\)"):
        released(job, 3, inputs)
    with pytest.raises(EvaluationError, match="past this holder's cap"):
        released(job, 4, aggregation.inputs_for(4))


def test_a_coordinator_leaving_the_search_path_is_refused(folders):
    """It learns the counts along one path only: an interval outside the one counted in at
    the previous step, or not aligned to the step's buckets, is no bisection."""
    (job,) = jobs_of(Task(lambda d: d.x.max()), folders[:1], max_probes=10**6)
    aggregation = Aggregation(job.plan)
    for stage in range(3):
        inputs = aggregation.inputs_for(stage)
        aggregation.add_stage(stage, [released(job, stage, inputs)])
    inputs = aggregation.inputs_for(3)
    ((node, state),) = inputs.items()
    size = 1 << (64 - 8 * 3)
    for moved in (state["lo"] + np.uint64(256 * size), state["lo"] + np.uint64(1)):
        with pytest.raises(EvaluationError, match="not a bisection"):
            released(job, 3, {node: {**state, "lo": moved}})
    with pytest.raises(EvaluationError, match="one interval per target"):
        released(job, 3, {node: {**state, "lo": state["lo"].astype("int64")}})
    released(job, 3, inputs)  # the honest step still goes through


@pytest.mark.usefixtures("seeded_noise")
def test_under_dp_the_search_is_noisy_approximate_and_every_step_is_paid(folders):
    privacy = DifferentialPrivacy(10.0, 1e-6)
    task = Task(lambda d: d.x.median(), privacy)  # counts need no bound
    jobs = jobs_of(task, folders)
    plan, dp = jobs[0].plan, jobs[0].privacy
    costs = [jobs[0].privacy_cost(stage) for stage in range(plan.stage_count)]
    assert len(costs) == 8 and all(cost.rho > 0 for cost in costs)
    assert dp.epsilon() == pytest.approx(10.0, rel=1e-3)  # the steps together cost the task's
    assert len(dp.noise) == 2 + 2 * 7  # count and shared buckets, then 2 targets a step
    exact = stacked(folders).x
    answers = [run(jobs_of(task, folders)) for _ in range(3)]
    assert len(set(answers)) == 3 and exact.median() not in answers, "the answers carry noise"
    for answer in answers:  # approximate: its rank near the middle of 1,200 values
        assert abs((exact < answer).mean() - 0.5) < 0.25, answer


def test_under_dp_each_step_of_the_search_is_paid_from_the_holders_ledger(folders, tmp_path):
    """As the daemon does before it computes a step: a second median at epsilon 10 goes past
    a budget of 15 part-way through its search, and is refused there."""
    (job,) = jobs_of(Task(lambda d: d.x.median(), DifferentialPrivacy(10.0, 1e-6)), folders[:1])
    ledger = PrivacyLedger(tmp_path / "ledger.db")
    budgets, sources = Budgets(epsilon_per_user=15.0, delta_per_user=1e-6), {"file:1:2": "d.csv"}
    for stage in range(order.STEPS):
        ledger.spend("alice", sources, "task 1", f"step {stage + 1}", job.privacy_cost(stage),
                     budgets)
    assert epsilon(ledger.spent("file:1:2", "alice"), 1e-6) == pytest.approx(10.0, rel=1e-3)
    paid = 0
    with pytest.raises(BudgetExceeded, match=r"epsilon_per_user=15"):
        for stage in range(order.STEPS):
            ledger.spend("alice", sources, "task 2", f"step {stage + 1}",
                         job.privacy_cost(stage), budgets)
            paid += 1
    assert 0 < paid < order.STEPS
    ledger.close()


def test_a_graph_whose_searches_the_sdk_did_not_write_is_refused():
    """A signed graph is still checked: a step past the search's last, or a step fed by another
    than the step before it (a second, uncounted search), is refused before anything runs."""
    plan = plan_of(lambda d: d.x.max())
    nodes = list(plan.graph.nodes)
    first, _, third = (n for n in nodes if n.params.get("kind") == order.KIND
                       and n.params["step"] < 3)
    beyond = replace(third, params={**third.params, "step": order.STEPS})
    with pytest.raises(ValueError, match="parameters the SDK does not write"):
        Plan(Graph([*nodes[:third.id], beyond, *nodes[third.id + 1:]]), plan.output)
    skipping = replace(third, inputs=(third.inputs[0], first.id))
    forged = Plan(Graph([*nodes[:third.id], skipping, *nodes[third.id + 1:]]), plan.output)
    with pytest.raises(EvaluationError, match="not fed by the step before it"):
        SearchGuard(forged, 10**6)
    SearchGuard(plan, 10**6)


def test_under_dp_min_and_max_are_refused_at_build():
    for body in (lambda d: d.x.min(), lambda d: d[["x"]].max()):
        with pytest.raises(TaskError, match=r"(min|max)\(\) \(node \d+\) is refused.*"
                                            r"quantile\(0.01\)"):
            Task(body, DifferentialPrivacy(1.0, 1e-6)).build()


@pytest.mark.parametrize("body,message", [
    (lambda d: d.groupby("k").median(), r"a groupby's median\(\) of several columns"),
    (lambda d: d.groupby("k").x.quantile([0.1, 0.9]), "MultiIndex"),
    (lambda d: d.groupby("k", keys=[1]).x.max(), "with declared keys"),
    (lambda d: d.x.quantile(1.5), r"q must be a number in \[0, 1\]"),
    (lambda d: d.x.min(skipna=False), "missing values are always skipped"),
])
def test_order_statistics_not_built_are_refused_at_build(body, message):
    with pytest.raises(UnsupportedOperation, match=message):
        plan_of(body)
