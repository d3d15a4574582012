"""DP-FedAvg: each worker's daemon clips its update and adds its share of the noise, whatever the
task's own code does; the coordinator reports the epsilon dp-accounting gives.

In process: the clipping, the noise's spread over many draws, the layout a worker sends, the
task's build. Over real daemons: a task whose train() makes a huge update moves the global model
by no more than the clip norm plus the noise's bound a round, under secure aggregation and
without; the epsilon in the task log is dp-accounting's RDP accountant's for the parameters.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from cluster import LocalCluster, log_text
from dp_accounting import dp_event
from dp_accounting.rdp.rdp_privacy_accountant import RdpAccountant
from learning_tasks import (
    ExfiltratingUnderDP,
    Regression,
    SkipsClipping,
    regression_data,
)

from sdk.privacy import DifferentialPrivacy, PrivacyRefused
from sdk.privacy.fedavg import DPFedAvg, clip
from sdk.proto import task_pb2
from sdk.task import FedAvg, TaskError
from sdk.weights import float_values, total_bytes
from worker.learning_job import LearningJob, dp_masked_input, dp_weights

pytestmark = pytest.mark.usefixtures("seeded_noise")  # statistical tests: seeded

# Bounds that a correct implementation breaks with probability below 1e-6 (see each use).
SIGMAS = 7.0


def accountant_epsilon(clip_norm: float, noise_multiplier: float, precision: int, dimension: int,
                       rounds: int, delta: float) -> float:
    """The epsilon of `rounds` rounds by dp-accounting's RDP accountant at integer orders, from
    the Skellam mechanism's zCDP bound (Agarwal, Kairouz and Liu, 2021, Theorem 3.5), written
    out here: sensitivity C * 10^p + sqrt(d) in L2 norm, sqrt(d) times that in L1 norm, in
    steps of the noise (a power of ten keeping its deviation within 2^20 steps; rounding to a
    step above 1 adds one step per value)."""
    scale = 10.0**precision
    sigma, step = noise_multiplier * clip_norm * scale, 1
    while sigma / step > 2**20:
        step *= 10
    variance = (sigma / step) ** 2
    rounding = step > 1
    l2 = (clip_norm * scale + math.sqrt(dimension)) / step + rounding * math.sqrt(dimension)
    l1 = math.sqrt(dimension) * (clip_norm * scale + math.sqrt(dimension)) / step + (
        rounding * dimension)
    accountant = RdpAccountant(list(range(2, 257)))
    accountant.compose(dp_event.ZCDpEvent(l2**2 / (2 * variance), 3 * l1 / (2 * variance)),
                       rounds)
    return accountant.get_epsilon(delta)


# In process: clipping and noise.

DP = DPFedAvg(clip_norm=0.5, noise_multiplier=2.0, precision=3, dimension=1000)
SCALE = 10.0**DP.precision


def update_units(dp: DPFedAvg, global_values: np.ndarray, trained: np.ndarray) -> np.ndarray:
    """The update's part of what `clipped` releases, in fixed-point units."""
    return dp.clipped(global_values, trained) - np.rint(global_values * 10.0**dp.precision)


def test_a_long_update_is_clipped_to_the_norm_and_a_short_one_kept():
    rng = np.random.default_rng(1)
    global_values = rng.normal(size=DP.dimension)
    huge = global_values + 1000 * rng.normal(size=DP.dimension)
    norm = np.linalg.norm(update_units(DP, global_values, huge))
    rounding = 0.5 * math.sqrt(DP.dimension)  # each value rounded to the grid on its own
    assert DP.clip_norm * SCALE - rounding <= norm <= DP.clip_norm * SCALE + rounding

    step = rng.normal(size=DP.dimension)
    short = global_values + 0.4 * step / np.linalg.norm(step)  # norm 0.4 < 0.5: unchanged
    assert np.abs(DP.clipped(global_values, short) / SCALE - short).max() <= 1 / SCALE


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_an_update_that_is_not_finite_counts_as_none(value):
    global_values = np.linspace(-1, 1, DP.dimension)
    trained = global_values.copy()
    trained[7] = value
    assert not update_units(DP, global_values, trained).any()


def test_an_update_whose_squares_overflow_is_still_clipped():
    update = np.full(DP.dimension, 1e300)
    assert np.linalg.norm(clip(update, 0.5)) == pytest.approx(0.5)


@pytest.mark.parametrize("shares", [1, 3])
def test_the_noise_a_worker_adds_has_the_calibrated_variance(shares):
    """200 releases of 1000 values: 2e5 draws of Skellam noise of variance (z C 10^p)^2 /
    shares. The sample variance's relative error has standard deviation sqrt(2 / n) = 0.32%
    (the Skellam's excess kurtosis, 1 / variance, is negligible): 2% is over 6 of them, and
    the mean's bound is 6 of its standard deviations; both fail with probability below 1e-8."""
    rng = np.random.default_rng(2)
    global_values = rng.normal(size=DP.dimension)
    trained = global_values + rng.normal(size=DP.dimension)
    clipped = DP.clipped(global_values, trained)
    noise = np.concatenate([DP.release(global_values, trained, shares) - clipped
                            for _ in range(200)]).astype(np.float64)
    variance = (DP.noise_multiplier * DP.clip_norm * SCALE) ** 2 / shares
    assert noise.var() == pytest.approx(variance, rel=0.02)
    assert abs(noise.mean()) <= 6 * math.sqrt(variance / noise.size)
    assert np.array_equal(noise, np.rint(noise))  # integers: the shares sum exactly


def test_a_round_costs_what_the_accountant_gives():
    dp = DPFedAvg(clip_norm=1.0, noise_multiplier=1.5, precision=6, dimension=21, delta=1e-5)
    for rounds in (1, 10):
        assert dp.epsilon(rounds) == pytest.approx(
            accountant_epsilon(1.0, 1.5, 6, 21, rounds, 1e-5), rel=1e-9)


# In process: what a worker sends.

INFOS = [task_pb2.TensorInfo(name="w", dtype="float32", shape=[3]),
         task_pb2.TensorInfo(name="count", dtype="int64", shape=[2]),
         task_pb2.TensorInfo(name="h", dtype="bfloat16", shape=[2]),
         task_pb2.TensorInfo(name="d", dtype="float64", shape=[1])]
GLOBAL = (np.array([1.0, 2.0, 3.0], "<f4").tobytes() + np.array([5, 7], "<i8").tobytes()
          + (np.array([0.5, -1.0], "<f4").view("<u4") >> 16).astype("<u2").tobytes()
          + np.array([4.0], "<f8").tobytes())
RELEASE = np.array([1500, 2250, -3000, 250, -1000, 4125], dtype=np.int64)  # 10^3 units


def test_the_released_weights_hold_the_noised_floats_and_the_global_integers():
    assert len(GLOBAL) == total_bytes(INFOS) and float_values(INFOS) == RELEASE.size
    sent = dp_weights(RELEASE, GLOBAL, INFOS, precision=3)
    assert np.frombuffer(sent[:12], "<f4").tolist() == [1.5, 2.25, -3.0]
    assert np.frombuffer(sent[12:28], "<i8").tolist() == [5, 7]  # the global's, not trained
    halves = np.frombuffer(sent[28:32], "<u2").astype(np.uint32) << 16
    assert halves.view(np.float32).tolist() == [0.25, -1.0]
    assert np.frombuffer(sent[32:], "<f8").tolist() == [4.125]


def test_the_masked_vector_weighs_one_and_carries_no_metrics():
    masks = np.zeros(8 + 2 + 16, dtype=np.uint64)
    vector = dp_masked_input(RELEASE, GLOBAL, INFOS, 3, 3, masks).view(np.int64)
    assert vector[:3].tolist() == [1500, 2250, -3000]
    assert vector[3:5].tolist() == [5000, 7000]
    assert vector[5:8].tolist() == [250, -1000, 4125]
    assert vector[8:].tolist() == [1000] + [0] * 17  # one sample, nothing validated


# In process: the task as built, and as a worker takes it.

def dp_task(**strategy) -> Regression:
    task = Regression(max_rounds=4)
    task.strategy = FedAvg(min_clients=2, max_clients=3, **strategy)
    return task


@pytest.mark.parametrize("strategy, words", [
    ({"clip_norm": 1.0}, "clip_norm is given without noise_multiplier"),
    ({"noise_multiplier": 1.0}, "noise_multiplier is given without clip_norm"),
    ({"clip_norm": -1.0, "noise_multiplier": 1.0}, "clip_norm must be a positive number"),
    ({"clip_norm": 0.0, "noise_multiplier": 0.0}, "clip_norm must be a positive number"),
    ({"clip_norm": 1.0, "noise_multiplier": float("nan")}, "noise_multiplier must be a positive"),
])
def test_dp_fedavg_needs_both_parameters_positive(strategy, words):
    with pytest.raises(TaskError, match=words):
        dp_task(**strategy).build()


def test_build_reports_the_epsilon_of_every_round_at_the_delta_asked():
    task = dp_task(clip_norm=1.0, noise_multiplier=2.0)
    task.privacy = DifferentialPrivacy(epsilon=10.0, delta=1e-5)
    spec = task.build().spec
    assert (spec.learning.clip_norm, spec.learning.noise_multiplier) == (1.0, 2.0)
    assert spec.privacy.delta == 1e-5
    assert spec.privacy.epsilon == pytest.approx(
        accountant_epsilon(1.0, 2.0, spec.precision, 21, 4, 1e-5), rel=1e-9)
    assert not Regression().build().spec.HasField("privacy")


def test_build_refuses_privacy_it_cannot_keep():
    task = dp_task(clip_norm=1.0, noise_multiplier=0.5)
    task.privacy = DifferentialPrivacy(epsilon=1.0)
    with pytest.raises(TaskError, match="raise noise_multiplier to at least"):
        task.build()
    plain = Regression()
    plain.privacy = DifferentialPrivacy(epsilon=1.0)
    with pytest.raises(TaskError, match="give the strategy clip_norm and noise_multiplier"):
        plain.build()


def test_a_worker_refuses_a_hand_made_spec_with_clipping_and_no_noise():
    spec = dp_task(clip_norm=1.0, noise_multiplier=1.0).build().spec
    spec.learning.noise_multiplier = 0
    with pytest.raises(PrivacyRefused, match="without noise_multiplier"):
        DPFedAvg.from_spec(spec)


def test_a_learning_job_states_what_each_round_costs(tmp_path):
    spec = dp_task(clip_norm=1.0, noise_multiplier=2.0).build().spec
    job = LearningJob(1, spec, tmp_path / "train.npz", tmp_path)
    plain = LearningJob(2, Regression().build().spec, tmp_path / "train.npz", tmp_path)
    try:
        cost = job.privacy_cost(3)
        assert cost == DPFedAvg.from_spec(spec).round_cost()
        assert job.total_privacy_cost() == cost.times(4) and job.delta == 1e-6
        with pytest.raises(ValueError, match="rounds 1 to 4"):
            job.privacy_cost(5)
        assert plain.privacy_cost(1) is None and plain.total_privacy_cost() is None
    finally:
        job.weights.close()
        plain.weights.close()


# Over real daemons.

WORKERS = {"w1": 60, "w2": 100}  # two: each worker loads torch, on a 2-core machine
CLIP, NOISE = 0.5, 0.5


@pytest.fixture(scope="module")
def dp_cluster(tmp_path_factory):
    cluster = LocalCluster(tmp_path_factory.mktemp("dp"))
    cluster.start_coordinator()
    for seed, (name, rows) in enumerate(WORKERS.items()):
        np.savez(cluster.data_dir(name) / "train.npz", **regression_data(rows, seed))
        cluster.start_worker(name, None, False)
    for name in WORKERS:
        cluster.wait_connected(name)
    yield cluster
    cluster.stop()


@pytest.mark.parametrize("secure", [True, False])
def test_a_task_that_skips_clipping_moves_the_model_by_the_clip_norm_and_noise(dp_cluster,
                                                                               secure):
    client = dp_cluster.client()
    built = SkipsClipping(CLIP, NOISE, secure_aggregation=secure, max_rounds=2).build()
    task_id = client.create_task(built)
    assert client.wait(task_id), client.get_task(task_id).error
    result = client.get_result(task_id)

    floats = [name for name, tensor in built.weights.items() if tensor.is_floating_point()]
    moved = torch.cat([(result[n] - built.weights[n]).double().flatten() for n in floats])
    d = moved.numel()
    # The average's noise per value: the n = 2 workers' shares (1/h of the variance each under
    # secure aggregation, h = max(min_clients, 2 // 2 + 1) = 2; all of it without) over n.
    # Each value stays within 7 standard deviations but with probability 5e-11 (Bernstein's
    # bound for Skellam noise): with 21 values and 2 rounds, below 1e-8 in all.
    shares, n = (2 if secure else 1), 2
    noise_std = math.sqrt(n / shares) * NOISE * CLIP / n
    per_round = CLIP + SIGMAS * noise_std * math.sqrt(d) + 2 * math.sqrt(d) * 1e-6 + 1e-4
    assert 0 < moved.norm() <= 2 * per_round  # the task's own update moved each value 2000
    assert int(result["0.num_batches_tracked"]) == 0  # integers keep the global value
    assert client.get_metrics(task_id) == []  # no metrics under DP

    log = log_text(client, task_id)
    assert "clip norm 0.5, noise multiplier 0.5" in log and "client level" in log
    assert ("each worker adds 1/2 of the noise" if secure
            else "each worker adds the whole noise") in log
    spent = [float(e) for e in re.findall(
        r"round \d/2: averaged \d workers \(each weighing 1\); privacy spent so far: "
        r"epsilon ([0-9.e+]+) at delta 1e-06", log)]
    assert spent == [pytest.approx(accountant_epsilon(CLIP, NOISE, 6, d, rounds, 1e-6),
                                   rel=1e-3) for rounds in (1, 2)], log


def test_the_task_codes_error_leaves_nothing_of_its_message_under_dp(dp_cluster):
    client = dp_cluster.client()
    task_id = client.create_task(ExfiltratingUnderDP().build())
    assert not client.wait(task_id)
    reported = log_text(client, task_id) + client.get_task(task_id).error
    assert "EXFIL" not in reported and "RuntimeError" not in reported
    assert "under differential privacy nothing of it leaves this holder" in reported
