"""Runs a learning task: FedAvg rounds over the selected workers.

Each round the workers download the global weights, train, and upload their weights with their
sample counts. Each chunk of an upload is added into a weighted sum the moment it arrives
(memory: one model, whatever the number of workers; nothing goes to disk). A worker that drops
mid-upload has left part of itself in the sum: the round then collects the complete uploads
again, into an emptied sum ("resend": each worker sends what it sent before). The coordinator
writes the average as the new checkpoint and logs the round's metrics averaged over validation
samples.

Under secure aggregation (the default) the workers first exchange keys and shares through the
coordinator; each then uploads its weights times its samples, its sample counts and metrics as
one masked fixed-point vector (sdk.weights), the masked vectors are summed as they arrive, and
only the unmasked sum is ever read.

Under DP-FedAvg (sdk.privacy.fedavg) each worker's daemon sends its update clipped and noised,
weighing 1 and with no metrics: the average divides by the number of workers summed, and the
log says at start what the guarantee is and after each round the epsilon spent so far.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from coordinator.contributions import Contribution, StreamedSum, WordSum
from coordinator.fedavg import WeightedSum, secure_tail, write_secure_average
from coordinator.registry import WorkerRegistry
from coordinator.rounds import Round, select_workers
from coordinator.metrics import ROUND_SECONDS
from coordinator.secure import SecureRound, describe_mode
from coordinator.store import Checksum, Store
from sdk import weights
from sdk.privacy.accounting import fewest_honest
from sdk.privacy.fedavg import DPFedAvg
from sdk.proto import task_pb2
from sdk.secagg import Rule
from sdk.secagg.fixedpoint import WORDS


async def run_learning(
    registry: WorkerRegistry, store: Store, task_id: int, spec: task_pb2.TaskSpec,
    log: Callable[[str], None], resumed: bool = False,
) -> None:
    """Runs every round; the final global weights are the task's result.

    A task `resumed` after a coordinator restart carries on at the round after its last
    checkpoint, over the workers that joined it before (those of them that come back)."""
    rules, learning = spec.rules, spec.learning
    infos = list(learning.weights)
    size = weights.total_bytes(infos)
    first = store.checkpoint_round(task_id) + 1 if resumed else 1
    previous = store.task_workers(task_id) if resumed else []
    if resumed:
        log(f"resumed at round {first} of {learning.max_rounds} after a coordinator restart"
            + (f", from the checkpoint of round {first - 1}" if first > 1 else ""))
    if first > learning.max_rounds:  # the last round's checkpoint was written: it is the result
        store.keep_weights_as_result(task_id)
        store.drop_spare_weights(task_id)
        return
    workers = await select_workers(registry, rules, [d.file for d in spec.datasets], log,
                                   previous)
    round_ = Round(registry, task_id, first, workers, rules.min_clients, log)
    log(f"selected {len(workers)} worker(s): {round_.names}; model of {len(infos)} tensors, "
        f"{size / 2**20:.1f} MiB")
    log(describe_mode(spec))
    dp = DPFedAvg.from_spec(spec)
    if dp is not None:  # while the workers load the task: the accountant takes a while to load
        describing = asyncio.create_task(
            asyncio.to_thread(describe_privacy, dp, spec, len(workers)))
    await round_.phase("join", rules.connection_timeout)
    if dp is not None:
        for line in await describing:
            log(line)
    log(f"{len(round_.workers)} worker(s) loaded the task and their data")
    store.set_workers(task_id, sorted(worker.name for worker in round_.workers))
    aggregate = (_SecureAggregate(spec, round_, dp is not None, store.weights_path(task_id))
                 if spec.secure_aggregation
                 else _PlainAggregate(infos, round_, rules, dp is not None))
    try:
        for number in range(first, learning.max_rounds + 1):
            round_.number = number
            validate = learning.validate_frac > 0 and number % learning.validate_interval == 0
            average = store.spare_weights_path(task_id)
            started = time.perf_counter()
            with store.writes.guard(f"the checkpoint of round {number} of task {task_id}"):
                workers, samples, metrics, checksum = await aggregate.train(  # writes `average`
                    {"round": number, "validate": validate}, average)
            ROUND_SECONDS.labels("learning").observe(time.perf_counter() - started)
            store.checkpoint(task_id, average, checksum, number)
            prefix = f"round {number}/{learning.max_rounds}: "
            if metrics:
                store.save_metrics(task_id, number, workers, metrics)
                shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
                log(f"{prefix}{shown} from {workers} workers")
            elif dp is not None:
                spent = await asyncio.to_thread(dp.epsilon, number)
                log(f"{prefix}averaged {workers} workers (each weighing 1); privacy spent so "
                    f"far: epsilon {spent:.4g} at delta {dp.delta:g}")
            else:
                log(f"{prefix}averaged {workers} workers ({samples} training samples)")
        store.keep_weights_as_result(task_id)
    finally:
        store.drop_spare_weights(task_id)


# Workers summed, training samples, metrics, and the checksum of the average written.
Outcome = tuple[int, int, dict[str, float], Checksum]


def describe_privacy(dp: DPFedAvg, spec: task_pb2.TaskSpec, selected: int) -> list[str]:
    """The task log's lines on what DP-FedAvg guarantees, and at what cost."""
    rounds = spec.learning.max_rounds
    if spec.secure_aggregation:
        rule = Rule.of(spec)
        honest = fewest_honest(rule, selected)
        noise = (f"under secure aggregation each worker adds 1/{honest} of the noise: the sum "
                 f"carries all of it while {honest} of the workers summed (the threshold "
                 f"secure aggregation enforces, {rule.describe(selected)}) are honest; "
                 "colluding workers can remove their own shares")
    else:
        noise = ("without secure aggregation each worker adds the whole noise, which the "
                 "coordinator sees on each worker's weights: the average carries "
                 "as many times the noise's variance as workers are summed, and it costs "
                 "accuracy accordingly")
    return [
        (f"differential privacy: DP-FedAvg, clip norm {dp.clip_norm:g}, noise multiplier "
         f"{dp.noise_multiplier:g} (each worker's daemon clips its update to L2 norm "
         f"{dp.clip_norm:g}; Skellam noise of standard deviation "
         f"{dp.noise_multiplier * dp.clip_norm:g} on the sum); {noise}"),
        ("differential privacy is at client level: it protects each holder's whole dataset "
         "(the run with or without it is hard to tell apart), not one row of it, and the noise "
         "it takes costs accuracy accordingly with a handful of holders; no amplification by "
         "sampling is claimed (the coordinator chooses who trains)"),
        (f"differential privacy: {rounds} round(s) cost epsilon {dp.epsilon(rounds):.4g} at "
         f"delta {dp.delta:g}; each worker weighs 1 (the average divides by the workers summed) "
         "and releases no metrics (validate() returns the submitter's numbers, with no bound)"),
    ]


async def _collect(round_: Round, total: StreamedSum, receiver: Callable[[], Contribution],
                   inputs: dict[str, Any], timeout: float,
                   secagg: dict[str, Any] | None = None) -> dict[str, Any]:
    """The round's uploads, folded into `total` as they arrive; their metas by worker name.

    While a worker that dropped mid-upload has left part of itself in the sum, the workers
    whose uploads were whole send them again into the emptied sum."""
    phase = "train"
    while True:
        await asyncio.to_thread(total.restart)  # zeroing a model's sum takes seconds
        answers = await round_.phase(phase, timeout, inputs=inputs, secagg=secagg,
                                     receiver=lambda worker: receiver())
        if not total.tainted:
            return answers
        round_.log(f"round {round_.number}: part of a dropped worker's upload had reached the "
                   f"sum; collecting the uploads of {round_.names} again without it")
        phase, secagg = "resend", None


class _PlainAggregate:
    """Rounds where the coordinator reads each worker's weights and sample count."""

    def __init__(self, infos: list[task_pb2.TensorInfo], round_: Round,
                 rules: task_pb2.RoundRules, private: bool) -> None:
        self.round, self.rules = round_, rules
        self.size = weights.total_bytes(infos)
        self.total = WeightedSum(infos)
        self.weigh = weighing_one if private else samples_of
        self.private = private

    async def train(self, inputs: dict[str, Any], average: Path) -> Outcome:
        answers = await _collect(
            self.round, self.total, lambda: Contribution(self.total, self.size, self.weigh),
            inputs, self.rules.wait_timeout)
        checksum = await asyncio.to_thread(self.total.write_average, average)
        metrics = {} if self.private else _metrics(list(answers.values()))
        return len(answers), self.total.samples, metrics, checksum


class _SecureAggregate:
    """Rounds where the coordinator reads only the sum of the workers' masked vectors."""

    def __init__(self, spec: task_pb2.TaskSpec, round_: Round, private: bool,
                 global_path: Path) -> None:
        self.round, self.rules, self.precision = round_, spec.rules, spec.precision
        self.secagg = Rule.of(spec)
        self.private = private
        self.global_path = global_path  # the round's global weights (32-bit words add them)
        self.infos = list(spec.learning.weights)
        bits = weights.secure_bits(spec)
        self.length = weights.secure_length(self.infos, bits)
        self.sum = WordSum(np.zeros(self.length, dtype=WORDS[bits]))  # reused: faulted in once
        self.described = 0  # workers of the last round whose protocol the log stated

    async def train(self, inputs: dict[str, Any], average: Path) -> Outcome:
        protocol = SecureRound(self.round, self.rules, self.secagg)
        selected = len(self.round.workers)  # the log restates the protocol when this changes
        answers = await self.round.phase("secagg_keys", self.rules.connection_timeout,
                                         secagg=protocol.opening(selected != self.described))
        self.described = selected
        # In a thread: it zeroes the sum, seconds for a large model, while heartbeats go on.
        await asyncio.to_thread(protocol.start, protocol.parse(answers, "secagg_keys"),
                                self.length, self.sum.words)
        peers = await protocol.exchange_shares()
        size = self.sum.words.nbytes
        answers = await _collect(
            self.round, self.sum, lambda: Contribution(self.sum, size, masked_weight),
            inputs, self.rules.wait_timeout, protocol.masked_requests(peers, None, inputs))
        for name in answers:
            protocol.summed_masked(name)
        total = await protocol.unmask()
        tail = secure_tail(total, self.precision)
        samples, validated = round(tail[0]), round(tail[1])
        if self.private:  # DP-FedAvg: the fixed denominator, whatever the sum carries
            samples, validated = len(protocol.summed), 0
        checksum = await asyncio.to_thread(write_secure_average, average, self.infos, total,
                                           samples, self.precision, self.global_path)
        metas = [answers[name] for name in protocol.summed if name in answers]
        return (len(protocol.summed), samples, self._metrics(metas, tail[2:], validated),
                checksum)

    def _metrics(self, metas: list[Any], sums: np.ndarray, validated: int) -> dict[str, float]:
        """The round's metrics from their summed slots, named as the workers that validated
        named them (the same names, or none are reported)."""
        names = {tuple(meta["metric_names"]) for meta in metas if meta["metric_names"]}
        if len(names) > 1:
            self.round.log(f"round {self.round.number}: the workers' validate() returned "
                           "different metrics; none are reported this round")
        if len(names) != 1 or not validated:
            return {}
        return {name: float(sums[i]) / validated for i, name in enumerate(names.pop())}


def masked_weight(meta: Any) -> int:
    """A masked vector's weight in the sum, 1; ValueError unless `meta` is what a worker's
    masked round answer carries."""
    names = meta.get("metric_names") if isinstance(meta, dict) else None
    if (not isinstance(names, list) or len(names) > weights.METRIC_SLOTS
            or not all(isinstance(name, str) for name in names)):
        raise ValueError(f"its answer names no metrics, or more than {weights.METRIC_SLOTS}")
    return 1


def weighing_one(meta: Any) -> int:
    """DP-FedAvg: every worker's weights count once, whatever its answer says."""
    return 1


def samples_of(meta: Any) -> int:
    """The training samples a worker's round answer carries; ValueError unless it is whole."""
    if not isinstance(meta, dict):
        raise ValueError("its answer carries no sample count")
    samples, validated = meta.get("samples"), meta.get("validate_samples", 0)
    metrics = meta.get("metrics", {})
    if not isinstance(samples, int) or samples <= 0:
        raise ValueError(f"it reported {samples!r} training samples: it needs some data to train")
    if not isinstance(validated, int) or validated < 0 or not isinstance(metrics, dict):
        raise ValueError("its validation samples or metrics are malformed")
    for name, value in metrics.items():
        if not isinstance(name, str) or not isinstance(value, (int, float)):
            raise ValueError(f"its metric {name!r} is not a number")
    return samples


def _metrics(metas: list[Any]) -> dict[str, float]:
    """The workers' validation metrics, averaged by their validation samples."""
    sums: dict[str, float] = {}
    validated = 0
    for meta in metas:
        count = int(meta.get("validate_samples", 0))
        if count and meta.get("metrics"):
            validated += count
            for name, value in meta["metrics"].items():
                sums[name] = sums.get(name, 0.0) + float(value) * count
    return {name: value / validated for name, value in sums.items()}
