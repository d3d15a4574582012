"""Differential privacy of analytics on the worker's side, in process: every kind of output gets
noise of the calibrated scale (statistical tests over many runs, failure probability below
1e-6 each), a hostile coordinator's mean is clamped, its layout refused, and groupby keys are
the declared ones, with or without DP."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import reduce
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sdk import dataset, values
from sdk.analytics import secure
from sdk.analytics.ops import REDUCTIONS, add_parts
from sdk.analytics.plan import (
    Aggregation,
    Parts,
    PrivacyError,
    reduction_params,
    run_in_process,
)
from sdk.pandas import UnsupportedOperation
from sdk.privacy import DifferentialPrivacy
from sdk.privacy.accounting import fewest_honest
from sdk.proto import services_pb2 as pb
from sdk.proto import values_pb2
from sdk.secagg import Rule, SecAggClient, SecAggError
from sdk.task import HorizontalAnalytics
from worker.analytics import AnalyticsJob
from worker.contributions import ContributionLedger
from worker.datasets import DataDir
from worker.sources import Catalog
from worker.secure import Contribution, SecureRounds

pytestmark = pytest.mark.usefixtures("seeded_noise")  # statistical tests: seeded

RUNS = 2000
HOLDERS = 3
SHARES = fewest_honest(Rule(2), HOLDERS)  # each of the three adds 1/2 of the noise: 3/2 in the sum
Z = 5.5  # |mean error| < Z standard errors: fails with probability 4e-8


class Task(HorizontalAnalytics):
    def __init__(self, body: Callable[[Any], Any], privacy: bool = True,
                 secure_aggregation: bool = True) -> None:
        super().__init__(name="dp", min_clients=2, max_clients=HOLDERS,
                         secure_aggregation=secure_aggregation,
                         privacy=DifferentialPrivacy(1.0, 1e-6) if privacy else None)
        self.body = body

    def dataset(self):
        return {"d": dataset.DataFrame("d.csv")}

    def execute(self, d):
        return self.body(d)


@pytest.fixture(scope="module")
def holders(tmp_path_factory) -> list[DataDir]:
    """Three holders of 300 rows: wages in [0, 120] (clipped at 100 by the tasks), departments
    a, b, c and x (x never declared)."""
    dirs = []
    for i in range(HOLDERS):
        rng = np.random.default_rng(i)
        folder = Path(tmp_path_factory.mktemp(f"holder{i}"))
        pd.DataFrame({"wage": rng.uniform(0, 120, 300).round(2),
                      "hours": rng.uniform(20, 50, 300).round(1),
                      "dept": rng.choice(list("abcx"), 300)}).to_csv(folder / "d.csv",
                                                                     index=False)
        dirs.append(DataDir(folder))
    return dirs


def jobs_of(task: Task, holders: list[DataDir], min_rows: int = 3) -> list[AnalyticsJob]:
    spec = task.build().spec
    return [AnalyticsJob(spec, Catalog(folder), min_rows) for folder in holders]


def exact_steps(jobs: list[AnalyticsJob]) -> list[Parts]:
    """The summed parts of each step without noise (later steps centred on the exact mean)."""
    aggregation, summed = Aggregation(jobs[0].plan), []
    for stage in range(jobs[0].plan.stage_count):
        parts = [job.parts(stage, aggregation.inputs_for(stage)) for job in jobs]
        summed.append({node: {name: reduce(add_parts, [p[node][name] for p in parts])
                              for name in parts[0][node]} for node in parts[0]})
        aggregation.add_stage(stage, [summed[-1]])
    return summed


def noised_runs(jobs: list[AnalyticsJob], node: int, named: dict[str, Any],
                label: Any) -> dict[str, pd.Series]:
    """Each part of `node` at `label` (a column or key; None for a scalar) released RUNS
    times: every holder's daemon adds its share by the hook it gives secure aggregation."""
    runs = {}
    for name, value in named.items():
        exact = value if label is None else value[label]
        integer = name in ("count", "size", "matches")
        units = 1 if integer else 10**jobs[0].precision
        fixed = int(exact) if integer else int(np.rint(exact * units))
        total = sum(np.array(job.noise(SHARES)(node, name, [label] * RUNS, [fixed] * RUNS),
                             dtype=object) for job in jobs)
        runs[name] = pd.Series(total - (HOLDERS - 1) * fixed, dtype="float64") / units
    return runs


def noise_std(job: AnalyticsJob, node: int, part: str, column: Any) -> float:
    """The std of the noise in the released sum: the calibrated one times sqrt(3/2)."""
    noise = job.privacy.noise[(node, part, column)]
    units = 1 if part in ("count", "size") else 10**job.precision
    return noise.std() / units * math.sqrt(HOLDERS / SHARES)


def check(released: pd.Series, mean: float, variance: float, slack: float = 0.0) -> None:
    """The released values' mean and variance are the expected ones (`slack`: the relative
    error of a delta-method approximation)."""
    runs = len(released)
    assert abs(released.mean() - mean) < Z * math.sqrt(variance / runs) + slack * abs(mean)
    low, high = stats.chi2.ppf([1e-7, 1 - 1e-7], runs - 1) / (runs - 1)  # of var / variance
    assert low * (1 - slack) < released.var() / variance < high * (1 + slack)


def test_count_and_sum_carry_their_calibrated_noise(holders):
    jobs = jobs_of(Task(lambda d: (d.wage.count(), d.wage.clip(0, 100).sum())), holders)
    (step,) = exact_steps(jobs)
    (count_node, count), (sum_node, total) = step.items()
    count_runs = noised_runs(jobs, count_node, count, None)["count"]
    check(count_runs, count["count"], noise_std(jobs[0], count_node, "count", None) ** 2)
    sum_runs = noised_runs(jobs, sum_node, total, None)["sum"]
    sigma = noise_std(jobs[0], sum_node, "sum", None)
    check(sum_runs, total["sum"], sigma**2)
    # The sum's noise is calibrated to the bound, 100: a row moves it by at most that.
    assert sigma == pytest.approx(jobs[0].privacy.noise_multiplier * 100 *
                                  math.sqrt(HOLDERS / SHARES), rel=1e-6)


def mean_moments(total: float, n: float, sigma_sum: float, sigma_n: float) -> tuple[float, float]:
    """The delta method's mean and variance of (total + noise) / (n + noise)."""
    mean = total / n
    return mean * (1 + sigma_n**2 / n**2), (sigma_sum**2 + mean**2 * sigma_n**2) / n**2


def test_a_mean_and_a_groupby_cell_carry_their_calibrated_noise(holders):
    jobs = jobs_of(Task(lambda d: d.assign(wage=d.wage.clip(0, 100))
                        .groupby("dept", keys=["a", "b", "c"]).wage.mean()), holders)
    (step,) = exact_steps(jobs)
    ((node, parts),) = step.items()
    assert list(parts["sum"].index) == ["a", "b", "c"]  # x's rows are left out
    for key in ("a", "c"):
        runs = noised_runs(jobs, node, parts, key)
        released = REDUCTIONS["groupby_mean"].finalize(runs)
        check(released, *mean_moments(parts["sum"][key], parts["count"][key],
                                      noise_std(jobs[0], node, "sum", None),
                                      noise_std(jobs[0], node, "count", None)), slack=0.02)


def spread_moments(squares: float, n: float, sigma_squares: float, sigma_deviations: float,
                   sigma_n: float) -> tuple[float, float]:
    """The delta method's mean and variance of the released variance, centred on the mean."""
    variance = squares / (n - 1)
    bias = -sigma_deviations**2 / (n * (n - 1)) + variance * sigma_n**2 / (n - 1) ** 2
    return variance + bias, (sigma_squares**2 + variance**2 * sigma_n**2) / (n - 1) ** 2


@pytest.mark.parametrize("kind", ["var", "std"])
def test_a_variance_and_a_std_carry_their_calibrated_noise(holders, kind):
    jobs = jobs_of(Task(lambda d: getattr(d.wage.clip(0, 100), kind)()), holders)
    _, step = exact_steps(jobs)
    ((node, parts),) = step.items()
    released = REDUCTIONS[kind].finalize(noised_runs(jobs, node, parts, None),
                                         **reduction_params(jobs[0].plan.graph[node].params))
    sigmas = [noise_std(jobs[0], node, part, None) for part in ("squares", "deviations",
                                                                  "count")]
    mean, variance = spread_moments(parts["squares"], parts["count"], *sigmas)
    if kind == "std":  # sqrt, by the delta method again
        mean, variance = (math.sqrt(mean) - variance / (8 * mean**1.5), variance / (4 * mean))
    check(released, mean, variance, slack=0.03)


def test_describe_carries_its_calibrated_noise_through_the_secure_sum(holders):
    """Through the whole of the worker's path: parts, the noise hook inside secure aggregation's
    encoding, the summed vector decoded. Each column's count, sum, squares and deviations."""
    jobs = jobs_of(Task(lambda d: d[["wage", "hours"]].clip(0, 100).describe()), holders)
    aggregation = Aggregation(jobs[0].plan)
    aggregation.add_stage(0, [job.parts(0, {}) for job in jobs])
    parts = [job.parts(1, aggregation.inputs_for(1)) for job in jobs]
    union = secure.union([secure.layout(p) for p in parts])
    exact = secure.decode(sum(secure.encode(p, union, 9, HOLDERS) for p in parts), union, 9)
    runs = 100
    released = [secure.decode(sum(secure.encode(p, union, 9, HOLDERS, job.noise(SHARES))
                                  for p, job in zip(parts, jobs)), union, 9)
                for _ in range(runs)]
    low, high = stats.chi2.ppf([1e-7, 1 - 1e-7], runs) / runs
    ((node, named),) = exact.items()
    for part, value in named.items():
        for column in ("wage", "hours"):
            errors = np.array([r[node][part][column] - value[column] for r in released])
            sigma = noise_std(jobs[0], node, part, column)
            assert low < np.mean(errors**2) / sigma**2 < high, (part, column)


def test_a_hostile_mean_is_clamped_into_the_bound(holders):
    """A coordinator sending a huge mean to a variance step would make one row's squared
    deviation huge, far past the sensitivity the noise is calibrated to, and the row would
    stand out of the noise. The worker clamps it into the data's bound."""
    body = lambda d: d.wage.clip(0, 100).var()  # noqa: E731
    (job,) = jobs_of(Task(body), holders[:1])
    node, stage = max(job.plan.stage_of.items(), key=lambda item: item[1])
    (mean_node,) = job.plan.inputs_of(stage)
    hostile = job.parts(stage, {mean_node: 1e12})[node]
    assert hostile == job.parts(stage, {mean_node: 100.0})[node]  # clamped to the bound
    assert hostile["squares"] <= 100**2 * hostile["count"]
    (clear,) = jobs_of(Task(body, privacy=False), holders[:1], min_rows=1)
    assert clear.parts(stage, {mean_node: 1e12})[node]["squares"] > 1e24  # what it would be
    with pytest.raises(PrivacyError, match="is not a number"):
        job.parts(stage, {mean_node: pd.Series({"wage": 50.0})})  # not a number: refused


def test_a_hostile_grouped_mean_is_clamped_per_key_and_column(holders):
    (job,) = jobs_of(Task(lambda d: d.assign(wage=d.wage.clip(0, 40), hours=d.hours.clip(
        0, 40))[["dept", "wage", "hours"]].groupby("dept", keys=["a", "b"]).std()), holders[:1])
    stage = max(job.plan.stage_of.values())
    (mean_node,) = job.plan.inputs_of(stage)
    hostile = pd.DataFrame({"wage": [1e9, -1e9], "hours": [7.0, 1e9], "extra": [1e9, 1e9]},
                           index=pd.Index(["a", "b"], name="dept"))
    clamped = pd.DataFrame({"wage": [40.0, 0.0], "hours": [7.0, 40.0]}, index=hostile.index)
    assert values.encode(job.parts(stage, {mean_node: hostile})) == values.encode(
        job.parts(stage, {mean_node: clamped}))


def test_a_hostile_union_layout_is_refused_under_dp(holders, tmp_path):
    """The union layout decides how each value is encoded: one that calls a count a float would
    encode it in 10^-9 units, where its noise (calibrated to integer units) would vanish."""
    (job,) = jobs_of(Task(lambda d: d[["wage", "hours"]].clip(0, 100).count()), holders[:1])
    parts = job.parts(0, {})
    rounds = SecureRounds(ContributionLedger(tmp_path / "ledger.sqlite3"))
    opening = pb.Assignment(task_id=1, round=1, phase="compute",
                            secagg=pb.SecAggRequest(index=0, selected=HOLDERS))
    rounds.open(opening, Contribution(b"task", "step 1", Rule(2)), parts)
    hostile = {node: {name: value.astype("float64") for name, value in named.items()}
               for node, named in secure.layout(parts).items()}
    masked = pb.Assignment(task_id=1, round=1, phase="secagg_masked",
                           secagg=pb.SecAggRequest(layout=values.encode(hostile)))
    with pytest.raises(SecAggError, match="the task's own layout"):
        rounds.masked_parts(masked, job.precision, job.max_clients, job.noise)


def test_a_step_is_masked_once_so_no_second_noise_draw_leaves(holders, tmp_path):
    """A coordinator that got a step's masked vector twice under the same masks would learn the
    difference of two noise draws (and so half of this worker's noise): a second request for
    the round's masked input is refused, with the same peers or others."""
    (job,) = jobs_of(Task(lambda d: d.wage.clip(0, 100).sum()), holders[:1])
    rounds = SecureRounds(ContributionLedger(tmp_path / "ledger.sqlite3"))
    opening = pb.Assignment(task_id=1, round=1, phase="compute",
                            secagg=pb.SecAggRequest(index=0, selected=HOLDERS))
    parts = job.parts(0, {})
    own = pb.SecAggResponse.FromString(
        rounds.open(opening, Contribution(b"task", "step 1", Rule(2)), parts)).keys
    others = {u: SecAggClient(u, Rule(2), HOLDERS) for u in range(1, HOLDERS)}
    keys = {0: (own.c_pk, own.s_pk), **{u: c.advertise() for u, c in others.items()}}
    rounds.answer(pb.Assignment(task_id=1, round=1, phase="secagg_share", secagg=pb.SecAggRequest(
        public_keys={u: pb.SecAggKeys(c_pk=c, s_pk=s) for u, (c, s) in keys.items()})))
    rounds.answer(pb.Assignment(task_id=1, round=1, phase="secagg_check", secagg=pb.SecAggRequest(
        shares={u: c.share_keys(keys)[0] for u, c in others.items()})))

    def masked(with_peers: list[int]) -> bytes:
        return rounds.masked_parts(pb.Assignment(
            task_id=1, round=1, phase="secagg_masked", secagg=pb.SecAggRequest(
                layout=values.encode(secure.layout(parts)), peers=with_peers)),
            job.precision, job.max_clients, job.noise)

    assert len(masked([0, 1, 2])) % 8 == 0
    for again in ([0, 1, 2], [0, 1]):
        with pytest.raises(SecAggError, match="already sent this round|already masked with"):
            masked(again)


def test_groupby_keys_are_the_declared_ones_with_or_without_dp(holders):
    stacked = pd.concat([pd.read_csv(h.root / "d.csv") for h in holders], ignore_index=True)
    body = lambda d: d.groupby("dept", keys=["b", "a", "zz"]).wage.sum()  # noqa: E731
    plan = jobs_of(Task(body, privacy=False), holders[:1])[0].plan
    result = run_in_process(plan, [{"d": pd.read_csv(h.root / "d.csv")} for h in holders])
    kept = stacked[stacked.dept.isin(["a", "b"])].groupby("dept").wage.sum()
    assert list(result.index) == ["a", "b", "zz"] and result["zz"] == 0
    assert result[["a", "b"]].to_dict() == pytest.approx(kept.to_dict())
    (job,) = jobs_of(Task(lambda d: d.assign(wage=d.wage.clip(0, 100)).groupby(
        "dept", keys=["b", "a", "zz"]).wage.sum()), holders[:1])
    (parts,) = job.parts(0, {}).values()
    assert list(parts["sum"].index) == ["b", "a", "zz"] and parts["sum"]["zz"] == 0


@pytest.mark.parametrize("keys", ["a", ["a", "a"], [], [None], [float("nan")], [["a"]]])
def test_malformed_groupby_keys_are_refused(keys):
    with pytest.raises(UnsupportedOperation, match="keys|key"):
        Task(lambda d: d.groupby("dept", keys=keys).size()).build()


def test_without_secure_aggregation_each_worker_adds_all_of_the_noise(holders):
    task = Task(lambda d: d.wage.count(), secure_aggregation=False)
    (job,) = jobs_of(task, holders[:1])
    (node,) = job.plan.stage_of
    exact = int(job.parts(0, {})[node]["count"])
    sent = np.array([values.decode(values_pb2.Value.FromString(job.compute(0, {})))[node]["count"]
                     for _ in range(500)], dtype=float)
    sigma = job.privacy.noise[(node, "count", None)].std()  # all of it, from this worker
    check(pd.Series(sent), exact, sigma**2)


def test_no_set_is_suppressed_under_dp(holders):
    """min_rows would break the sensitivity (one row could turn a suppressed group into a
    released one); the noise protects every set instead."""
    body = lambda d: d[d.wage > 110].wage.count()  # noqa: E731
    clear = jobs_of(Task(body, privacy=False), holders, min_rows=300)
    private = jobs_of(Task(body), holders, min_rows=300)
    (node,) = clear[0].plan.stage_of
    assert [job.parts(0, {}) for job in clear] == [{node: {"count": 0}}] * HOLDERS
    assert private[0].min_rows == 1
    assert all(job.parts(0, {})[node]["count"] > 0 for job in private)
