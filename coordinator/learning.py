"""Runs a learning task: FedAvg rounds over the selected workers.

Each round the workers download the global weights, train, and upload their weights with their
sample counts. Uploads stream to scratch files, so a worker that drops mid-upload leaves nothing
behind; once the phase ends, the coordinator folds the complete uploads into a weighted sum one
by one (memory: one model, whatever the number of workers), writes the average as the new
checkpoint, and logs the round's metrics averaged over validation samples.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from coordinator.fedavg import WeightedSum
from coordinator.registry import SpillReceiver, WorkerRegistry, WorkerSession
from coordinator.rounds import Round, select_workers
from coordinator.store import Store
from sdk import weights
from sdk.proto import task_pb2


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
    await round_.phase("join", rules.connection_timeout)
    log(f"{len(round_.workers)} worker(s) loaded the task and their data")
    scratch = store.scratch / f"task-{task_id}"
    total = WeightedSum(infos)
    for number in range(1, learning.max_rounds + 1):
        round_.number = number
        validate = learning.validate_frac > 0 and number % learning.validate_interval == 0
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)

        total.reset()
        folding = _Folder(total)

        def receiver(worker: WorkerSession) -> SpillReceiver:
            return SpillReceiver(scratch / f"{worker.session_id}.weights", size, check_meta)

        try:
            answers = await round_.phase("train", rules.wait_timeout,
                                         inputs={"round": number, "validate": validate},
                                         receiver=receiver, on_answer=folding.start)
            await folding.finish(answers.values())
            average = scratch / "average.weights"
            await asyncio.to_thread(total.write_average, average)
            store.checkpoint(task_id, average)
        finally:
            folding.cancel()
            shutil.rmtree(scratch, ignore_errors=True)
        samples, metrics = total.samples, _metrics([meta for _, meta in answers.values()])
        prefix = f"round {number}/{learning.max_rounds}: "
        if metrics:
            store.save_metrics(task_id, number, len(answers), metrics)
            shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            log(f"{prefix}{shown} from {len(answers)} workers")
        else:
            log(f"{prefix}averaged {len(answers)} workers ({samples} training samples)")
    store.keep_weights_as_result(task_id)


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

    def __init__(self, total: WeightedSum) -> None:
        self.total = total
        self._lock = asyncio.Lock()
        self._folds: dict[Path, asyncio.Task[None]] = {}

    def start(self, answer: tuple[Path, Any]) -> None:
        path, meta = answer
        if path not in self._folds:
            self._folds[path] = asyncio.create_task(self._fold(path, meta))

    async def _fold(self, path: Path, meta: Any) -> None:
        async with self._lock:
            await asyncio.to_thread(self.total.add_file, path, meta["samples"])
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
