"""Runs a learning task: FedAvg rounds over the selected workers.

Each round the workers download the global weights, train, and upload their weights with their
sample counts. Uploads stream to scratch files, so a worker that drops mid-upload leaves nothing
behind; each complete upload is folded into a weighted sum as it arrives, one at a time (memory:
one model, whatever the number of workers). The coordinator writes the average as the new
checkpoint and logs the round's metrics averaged over validation samples.

Under secure aggregation (the default) the workers first exchange keys and shares through the
coordinator; each then uploads its weights times its samples, its sample counts and metrics as
one masked fixed-point vector (sdk.weights), the masked vectors are summed as they arrive, and
only the unmasked sum is ever read.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from coordinator.fedavg import WeightedSum, per_tensor, write_average
from coordinator.registry import SpillReceiver, WorkerRegistry, WorkerSession
from coordinator.rounds import Round, select_workers
from coordinator.secure import SecureRound, describe_mode
from coordinator.store import Store
from sdk import weights
from sdk.proto import task_pb2
from sdk.secagg.fixedpoint import decode_in_place

PIECE = 16 << 20  # bytes of a masked upload read at a time


async def run_learning(
    registry: WorkerRegistry, store: Store, task_id: int, spec: task_pb2.TaskSpec,
    log: Callable[[str], None],
) -> None:
    """Runs every round; the final global weights are the task's result."""
    rules, learning = spec.rules, spec.learning
    infos = list(learning.weights)
    size = weights.total_bytes(infos)
    workers = await select_workers(registry, rules, [d.file for d in spec.datasets], log)
    round_ = Round(registry, task_id, 1, workers, rules.min_clients, log)
    log(f"selected {len(workers)} worker(s): {round_.names}; model of {len(infos)} tensors, "
        f"{size / 2**20:.1f} MiB")
    log(describe_mode(spec))
    await round_.phase("join", rules.connection_timeout)
    log(f"{len(round_.workers)} worker(s) loaded the task and their data")
    scratch = store.scratch / f"task-{task_id}"
    aggregate = (_SecureAggregate(spec, round_) if spec.secure_aggregation
                 else _PlainAggregate(infos, round_, rules))
    for number in range(1, learning.max_rounds + 1):
        round_.number = number
        validate = learning.validate_frac > 0 and number % learning.validate_interval == 0
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        try:
            average = scratch / "average.weights"
            workers, samples, metrics = await aggregate.train(
                scratch, {"round": number, "validate": validate}, average)
            store.checkpoint(task_id, average)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        prefix = f"round {number}/{learning.max_rounds}: "
        if metrics:
            store.save_metrics(task_id, number, workers, metrics)
            shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            log(f"{prefix}{shown} from {workers} workers")
        else:
            log(f"{prefix}averaged {workers} workers ({samples} training samples)")
    store.keep_weights_as_result(task_id)


Outcome = tuple[int, int, dict[str, float]]  # workers summed, training samples, metrics


class _PlainAggregate:
    """Rounds where the coordinator reads each worker's weights and sample count."""

    def __init__(self, infos: list[task_pb2.TensorInfo], round_: Round,
                 rules: task_pb2.RoundRules) -> None:
        self.round, self.rules = round_, rules
        self.size = weights.total_bytes(infos)
        self.total = WeightedSum(infos)

    async def train(self, scratch: Path, inputs: dict[str, Any], average: Path) -> Outcome:
        self.total.reset()
        folding = _Folder(lambda path, meta: self.total.add_file(path, meta["samples"]))

        def receiver(worker: WorkerSession) -> SpillReceiver:
            return SpillReceiver(scratch / f"{worker.session_id}.weights", self.size, check_meta)

        try:
            answers = await self.round.phase("train", self.rules.wait_timeout, inputs=inputs,
                                             receiver=receiver, on_answer=folding.start)
            await folding.finish(answers.values())
        finally:
            folding.cancel()
        await asyncio.to_thread(self.total.write_average, average)
        metas = [meta for _, meta in answers.values()]
        return len(answers), self.total.samples, _metrics(metas)


class _SecureAggregate:
    """Rounds where the coordinator reads only the sum of the workers' masked vectors."""

    def __init__(self, spec: task_pb2.TaskSpec, round_: Round) -> None:
        self.round, self.rules, self.precision = round_, spec.rules, spec.precision
        self.infos = list(spec.learning.weights)
        self.length = weights.secure_length(self.infos)
        self.total = np.zeros(self.length, dtype=np.uint64)  # reused: faulted in once

    async def train(self, scratch: Path, inputs: dict[str, Any], average: Path) -> Outcome:
        protocol = SecureRound(self.round, self.rules)
        answers = await self.round.phase("secagg_keys", self.rules.connection_timeout,
                                         secagg=protocol.opening())
        protocol.start(protocol.parse(answers, "secagg_keys"), self.length, self.total)
        peers = await protocol.exchange_shares()
        senders: dict[Path, str] = {}

        def receiver(worker: WorkerSession) -> SpillReceiver:
            path = scratch / f"{worker.session_id}.masked"
            senders[path] = worker.name
            return SpillReceiver(path, 8 * self.length, check_secure_meta)

        folding = _Folder(lambda path, meta: protocol.add_masked(
            senders[path], self.length, _words(path)))
        try:
            answers = await self.round.phase("train", self.rules.wait_timeout, inputs=inputs,
                                             receiver=receiver, on_answer=folding.start,
                                             secagg=protocol.masked_requests(peers, None, inputs))
            await folding.finish(answers.values())
        finally:
            folding.cancel()
        total = await protocol.unmask()
        sums = await asyncio.to_thread(decode_in_place, total, self.precision)
        tail = sums[self.length - 2 - weights.METRIC_SLOTS:]
        samples, validated = round(tail[0]), round(tail[1])
        await asyncio.to_thread(write_average, average, self.infos,
                                per_tensor(sums, self.infos), samples)
        metas = [answers[name][1] for name in protocol.summed if name in answers]
        return len(protocol.summed), samples, self._metrics(metas, tail[2:], validated)

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


def _words(path: Path) -> Iterator[np.ndarray]:
    """A masked upload's uint64 words, a piece at a time."""
    with open(path, "rb") as handle:
        while piece := handle.read(PIECE):
            yield np.frombuffer(piece, dtype="<u8")


def check_secure_meta(meta: Any) -> None:
    """ValueError unless `meta` is what a worker's masked round answer carries."""
    names = meta.get("metric_names") if isinstance(meta, dict) else None
    if (not isinstance(names, list) or len(names) > weights.METRIC_SLOTS
            or not all(isinstance(name, str) for name in names)):
        raise ValueError(f"its answer names no metrics, or more than {weights.METRIC_SLOTS}")


def check_meta(meta: Any) -> None:
    """ValueError unless `meta` is what a worker's round answer carries."""
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


class _Folder:
    """Folds each worker's upload into the sum as soon as it is complete, one at a time,
    while the others are still uploading."""

    def __init__(self, fold: Callable[[Path, Any], None]) -> None:
        self.fold = fold
        self._lock = asyncio.Lock()
        self._folds: dict[Path, asyncio.Task[None]] = {}

    def start(self, answer: tuple[Path, Any]) -> None:
        path, meta = answer
        if path not in self._folds:
            self._folds[path] = asyncio.create_task(self._fold(path, meta))

    async def _fold(self, path: Path, meta: Any) -> None:
        async with self._lock:
            await asyncio.to_thread(self.fold, path, meta)
        path.unlink()

    async def finish(self, answers: Iterable[tuple[Path, Any]]) -> None:
        """Waits until exactly these answers are folded in."""
        for answer in answers:
            self.start(answer)  # one that arrived as the phase ended
        await asyncio.gather(*self._folds.values())

    def cancel(self) -> None:
        for fold in self._folds.values():
            fold.cancel()


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
