"""A round: selected workers, and phases that each end the moment every one has answered.

Every phase is bounded by a deadline that is a ceiling, never a sleep. A worker that misses it,
reports an error, or disconnects is dropped from the round with the reason in the task's log; the
round goes on while at least `min_clients` remain and fails with a clear message otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Collection
from typing import Any

from coordinator import metrics
from coordinator.registry import Receiver, WorkerGone, WorkerRegistry, WorkerSession
from sdk import values
from sdk.proto import services_pb2 as pb
from sdk.proto import task_pb2

log = logging.getLogger("deltaflow.coordinator")


class RoundFailed(Exception):
    """The round cannot go on: the message says who came and who was missing."""


async def select_workers(
    registry: WorkerRegistry,
    rules: task_pb2.RoundRules,
    files: list[str],
    log: Callable[[str], None],
    previous: Collection[str] = (),
) -> list[WorkerSession]:
    """Up to `max_clients` connected workers holding every file, once at least `min_clients` do.

    Waits at most `connection_timeout` for enough eligible workers to connect; then logs one
    line on the connected workers that are not eligible, if any. With `previous` (the workers
    a task ran over before the coordinator restarted) only those are eligible, and it waits for
    all of them: the caller decides whether those that came are enough.
    """
    deadline = time.monotonic() + rules.connection_timeout
    wanted = set(previous)
    while True:
        eligible = [worker for worker in registry.eligible(files)
                    if not wanted or worker.name in wanted]
        remaining = deadline - time.monotonic()
        enough = len(eligible) == len(wanted) if wanted else len(eligible) >= rules.min_clients
        if enough or remaining <= 0:
            break
        await registry.wait_for_change(remaining)
    if registry.count() > len(eligible):
        lacking = {name: missing for name, missing in registry.lacking(files).items()
                   if not wanted or name in wanted}
        if lacking:
            log(not_eligible(lacking))
    if len(eligible) < rules.min_clients:
        names = ", ".join(sorted(w.name for w in eligible)) or "none"
        among = f" of the {len(wanted)} it ran over before the restart" if wanted else ""
        raise RoundFailed(
            f"only {len(eligible)} eligible worker(s){among} came within connection_timeout="
            f"{rules.connection_timeout:g}s ({names}); the task needs min_clients="
            f"{rules.min_clients} connected workers holding {listed(files, 'file')}"
        )
    return random.sample(eligible, min(len(eligible), rules.max_clients))


SHOWN = 5  # workers named, files named, and groups shown in a line about workers


def not_eligible(lacking: dict[str, tuple[str, ...]]) -> str:
    """One line on the workers (by name) that lack files (what each lacks), grouped by what
    they lack, at most SHOWN of anything named: "not eligible: 3 workers lack wages.csv: a,
    b, c; 1 worker lacks x.csv: d"."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for name, missing in sorted(lacking.items()):
        groups.setdefault(missing, []).append(name)
    ordered = sorted(groups.items(), key=lambda group: -len(group[1]))
    parts = [f"{len(names)} worker{'s lack' if len(names) > 1 else ' lacks'} "
             f"{listed(list(missing), 'file')}: {listed(names, 'worker')}"
             for missing, names in ordered[:SHOWN]]
    rest = sum(len(names) for _, names in ordered[SHOWN:])
    if rest:
        parts.append(f"{rest} more lack other files")
    return "not eligible: " + "; ".join(parts)


def listed(items: list[str], noun: str) -> str:
    """`items` joined with commas, the first SHOWN of them: "a, b, c and 4 more files"."""
    shown = ", ".join(items[:SHOWN])
    rest = len(items) - SHOWN
    return f"{shown} and {rest} more {noun}{'s' if rest > 1 else ''}" if rest > 0 else shown


class Round:
    """The workers of one round of one task, and the phases they go through."""

    def __init__(
        self,
        registry: WorkerRegistry,
        task_id: int,
        number: int,
        workers: list[WorkerSession],
        min_clients: int,
        log: Callable[[str], None],
    ) -> None:
        self.registry = registry
        self.task_id = task_id
        self.number = number
        self.workers = list(workers)
        self.min_clients = min_clients
        self.log = log
        for worker in self.workers:
            worker.tasks.add(task_id)  # it may now download the task and its weights

    @property
    def names(self) -> str:
        """The round's workers by name, the first SHOWN of them: "a, b, c and 995 more"."""
        return listed(sorted(w.name for w in self.workers), "worker")

    async def phase(
        self, name: str, timeout: float, stage: int = 0, inputs: Any = None,
        receiver: Callable[[WorkerSession], Receiver] | None = None,
        secagg: dict[str, pb.SecAggRequest] | None = None,
    ) -> dict[str, Any]:
        """Sends the phase to every worker of the round; their answers, by worker name.

        Returns as soon as all have answered or dropped, at the latest after `timeout` seconds.
        Answers are bytes, or what `receiver(worker)`'s receiver makes of them. `secagg` holds
        each worker's own secure-aggregation request.
        """
        assignment = pb.Assignment(
            task_id=self.task_id, round=self.number, phase=name, stage=stage, timeout=timeout,
            inputs=values.encode(inputs),
        )
        started = time.perf_counter()
        futures: dict[asyncio.Future[Any], tuple[WorkerSession, int]] = {}
        for worker in self.workers:
            exchange_id, future = self.registry.expect(
                worker, receiver and receiver(worker),
                lambda text, name=worker.name: self.log(f"worker {name}: {text}"))
            message = pb.Assignment()
            message.CopyFrom(assignment)
            message.exchange_id = exchange_id
            if secagg is not None:
                message.secagg.CopyFrom(secagg[worker.name])
            worker.send(pb.CoordinatorMessage(assignment=message))
            futures[future] = (worker, exchange_id)
        try:
            _, late = await asyncio.wait(futures, timeout=timeout) if futures else (set(), set())
        finally:  # also when the task is cancelled: nothing is left waiting for these workers
            for future, (_, exchange_id) in futures.items():
                self.registry.forget(exchange_id)
                future.cancel()
        answers: dict[str, Any] = {}
        dropped: list[tuple[WorkerSession, str]] = []
        for future, (worker, _) in futures.items():
            if future in late:
                dropped.append((worker, f"no answer within {timeout:g}s"))
            elif isinstance(future.exception(), WorkerGone):
                dropped.append((worker, str(future.exception())))
            else:
                answers[worker.name] = future.result()
        took = time.perf_counter() - started
        metrics.PHASE_SECONDS.labels(name).observe(took)
        log.debug("task %d round %d: %s answered by %d of %d worker(s) in %.3f s", self.task_id,
                  self.number, name, len(answers), len(futures), took)
        for worker, reason in dropped:
            self.drop(worker, name, reason)
        self.check(name)
        return answers

    def drop(self, worker: WorkerSession, phase: str, reason: str) -> None:
        """Leaves `worker` out of the rest of the round (and the task), saying why."""
        self.workers.remove(worker)
        metrics.DROPS.labels(phase).inc()
        worker.tasks.discard(self.task_id)
        worker.send(pb.CoordinatorMessage(release_task_id=self.task_id))
        self.log(f"round {self.number}: worker {worker.name} dropped in {phase}: {reason}")

    def check(self, phase: str) -> None:
        """RoundFailed once fewer than `min_clients` workers remain."""
        if len(self.workers) < self.min_clients:
            raise RoundFailed(
                f"round {self.number} failed in {phase}: {len(self.workers)} of the workers "
                f"remain ({self.names or 'none'}), fewer than min_clients={self.min_clients}"
            )
