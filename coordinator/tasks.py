"""Tasks on the coordinator: creation, their logs as they grow, their runs and their end.

A write of a task's state that the disk fails (`writes.WriteFailed`) ends the task in ERROR
with the failure's message; its end is then kept by the store until the disk takes it."""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from google.protobuf.message import DecodeError

from coordinator.analytics import run_analytics
from coordinator.learning import run_learning
from coordinator.limits import Limits, PerUser, bound, cut_line, exhausted
from coordinator.registry import WorkerRegistry
from coordinator.rounds import RoundFailed
from coordinator.store import Checksum, Store, TaskRecord
from coordinator.writes import WriteFailed
from sdk import values
from sdk.proto import services_pb2 as pb
from sdk.proto import task_pb2

log = logging.getLogger("deltaflow.coordinator")


class TaskManager:
    """Owns every task's life: PENDING -> RUNNING -> FINISHED | ERROR | CANCELLED."""

    def __init__(self, store: Store, registry: WorkerRegistry, limits: Limits = Limits()) -> None:
        self.store = store
        self.registry = registry
        self.limits = limits
        self._runs: dict[int, asyncio.Task[None]] = {}
        self._covered: dict[int, list[str]] = {}  # an analytics task's workers, once it ends
        self._creating = PerUser()  # tasks being received
        self._changed: dict[int, asyncio.Event] = {}

    def recover(self) -> None:
        """Carries on the tasks that were pending or running when the coordinator last
        stopped: a learning task from its last checkpoint, an analytics task from the start."""
        for task in self.store.unfinished_tasks():
            try:
                spec = task_pb2.TaskSpec.FromString(self.store.load_spec(task.id))
            except (OSError, DecodeError) as error:
                reason = (f"the coordinator restarted while the task was running and cannot "
                          f"read it back ({error}); submit it again")
                self.log(task.id, f"task {task.id} failed: {reason}")
                self.store.set_state(task.id, pb.TASK_STATE_ERROR, reason)
                continue
            self._runs[task.id] = asyncio.create_task(self._run(task.id, spec, resumed=True))

    @contextmanager
    def reserve(self, owner: str) -> Iterator[None]:
        """Holds a place for a task of `owner` while it is received; Refused when the
        owner already has --max-tasks-per-user tasks pending, running or being received."""
        active = self.store.count_unfinished(owner) + self._creating[owner]
        most = self.limits.max_tasks_per_user
        if active >= most:
            raise exhausted(f"{owner} already has {active} tasks pending, running or being "
                            f"created, the most allowed by {bound('--max-tasks-per-user', most)}"
                            "; wait for one to end, or cancel one")
        with self._creating.hold(owner):
            yield

    def create(self, spec: task_pb2.TaskSpec, spec_bytes: bytes, owner: str,
               signature: task_pb2.TaskSignature | None,
               weights: tuple[Path, Checksum] | None) -> int:
        """Records the task with its first log line, all or nothing (WriteFailed), and runs it."""
        rules = spec.rules
        kind = task_pb2.TaskKind.Name(spec.kind).removeprefix("TASK_KIND_").lower()
        signed = f"signed by {owner}" if signature is not None else "unsigned"

        def created(task_id: int) -> str:
            return cut_line(
                f"task {task_id} created by {owner} ({signed}): {spec.name} ({kind}; "
                f"min_clients={rules.min_clients}, max_clients={rules.max_clients}, "
                f"wait_timeout={rules.wait_timeout:g}s, "
                f"connection_timeout={rules.connection_timeout:g}s)",
                self.limits.max_log_line_chars)

        task_id = self.store.create_task(spec, spec_bytes, owner, signature, weights, created)
        log.info("[task %d] %s", task_id, created(task_id))
        self._runs[task_id] = asyncio.create_task(self._run(task_id, spec))
        return task_id

    def log(self, task_id: int, message: str) -> None:
        message = cut_line(message, self.limits.max_log_line_chars)
        self.store.append_log(task_id, message)
        log.info("[task %d] %s", task_id, message)
        self._notify(task_id)

    def changed(self, task_id: int) -> asyncio.Event:
        """An event set the next time the task's log or state changes."""
        return self._changed.setdefault(task_id, asyncio.Event())

    def workers(self, task_id: int) -> list[str]:
        """The task's workers by name: those in its round now, else those recorded at its end."""
        running = sorted(w.name for w in self.registry.connected() if task_id in w.tasks)
        return running or self.store.task_workers(task_id)

    def cancel(self, task: TaskRecord, by: str) -> None:
        run = self._runs.get(task.id)
        self._end(task.id, pb.TASK_STATE_CANCELLED, f"cancelled by {by}")
        if run is not None:
            run.cancel()

    async def shutdown(self) -> None:
        for run in self._runs.values():
            run.cancel()
        await asyncio.gather(*self._runs.values(), return_exceptions=True)

    async def _run(self, task_id: int, spec: task_pb2.TaskSpec, resumed: bool = False) -> None:
        try:
            self.store.set_state(task_id, pb.TASK_STATE_RUNNING)
            self._notify(task_id)
            def task_log(message: str) -> None:
                self.log(task_id, message)

            if spec.kind == task_pb2.TASK_KIND_LEARNING:
                await run_learning(self.registry, self.store, task_id, spec, task_log, resumed)
            else:
                result, self._covered[task_id] = await run_analytics(
                    self.registry, self.store, task_id, spec, task_log, resumed)
                self.store.save_result(task_id, values.encode(result).SerializeToString())
            self._end(task_id, pb.TASK_STATE_FINISHED)
        except asyncio.CancelledError:
            pass
        except RoundFailed as error:
            self._end(task_id, pb.TASK_STATE_ERROR, str(error))
        except WriteFailed as error:
            log.error("task %d failed: %s", task_id, error)
            self._end(task_id, pb.TASK_STATE_ERROR, str(error))
        except Exception as error:  # noqa: BLE001 - any failure ends the task, never the daemon
            log.exception("task %d failed", task_id)
            self._end(task_id, pb.TASK_STATE_ERROR, f"{type(error).__name__}: {error}",
                      traceback.format_exc())
        finally:
            self._runs.pop(task_id, None)
            self._release(task_id)

    def _end(self, task_id: int, state: int, error: str = "", details: str = "") -> None:
        task = self.store.get_task(task_id)
        if task is None or task.ended:
            return
        if state == pb.TASK_STATE_FINISHED:
            line = f"task {task_id} finished"
        else:
            word = "cancelled" if state == pb.TASK_STATE_CANCELLED else "failed"
            line = f"task {task_id} {word}: {error}" + (f"\n{details}" if details else "")
        try:
            self.log(task_id, line)
        except WriteFailed:  # the task's state says it; the store keeps it until written
            pass
        self.store.set_state(task_id, state, cut_line(error, self.limits.max_log_line_chars))
        self._notify(task_id)

    def _release(self, task_id: int) -> None:
        """Records the task's workers (an analytics result's: those its rows cover; else those
        that stayed to the end) and lets go the workers it concerns: a release to each of those
        (not to every connected worker: ten thousand writes a task)."""
        workers = self._covered.pop(task_id, None) or self.workers(task_id)
        try:
            if workers:
                self.store.set_workers(task_id, workers)
        except WriteFailed as error:
            log.error("%s", error)
        for worker in self.registry.involved(task_id):
            worker.tasks.discard(task_id)
            worker.send(pb.CoordinatorMessage(release_task_id=task_id))

    def _notify(self, task_id: int) -> None:
        event = self._changed.pop(task_id, None)
        if event is not None:
            event.set()
