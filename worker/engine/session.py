"""EngineSession: tasks that stay alive and train again and again, e.g. once per round.

The worker daemon keeps one engine task per federated task: ``open`` starts its subprocess and
runs ``load`` once; each round, ``train(round_input)`` places it on a device (as the Scheduler
would), sets ``task.round_input`` in the subprocess, runs ``train`` there and returns its dict.
Concurrent calls on different handles share the limits and the GPUs. Every blocking call has
an ``*_async`` twin for asyncio code, run in a thread of its own.
"""

from __future__ import annotations

import asyncio
import os
import threading
import traceback
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from .config import EngineLimits
from .gpu import GpuInventory
from .placement import PlacementError
from .pool import RamInfo, ResourcePool, psutil_ram
from .scheduler import oom_gave_up, resolve
from .task import Task

T = TypeVar("T")


class TaskError(RuntimeError):
    """A task failed: ``stage`` is "load" or "train", ``message`` the error and traceback."""

    def __init__(self, task_id: int | str, stage: str, message: str) -> None:
        super().__init__(f"task {task_id!r} failed in {stage}:\n{message}")
        self.task_id = task_id
        self.stage = stage
        self.message = message


async def _in_thread(function: Callable[..., T], *args: Any) -> T:
    """Run a blocking call in a new thread, so that waiting calls never exhaust a pool."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def run() -> None:
        try:
            result = function(*args)
        except BaseException as error:
            loop.call_soon_threadsafe(settle, lambda failure=error: future.set_exception(failure))
        else:
            loop.call_soon_threadsafe(settle, lambda: future.set_result(result))

    threading.Thread(target=run, daemon=True).start()
    return await future


@dataclass(frozen=True)
class SessionCounts:
    """What a session's tasks did: ``running`` are open (loading, training or waiting for their
    next round), ``started`` were ever opened, ``ended`` counts the others by how they ended:
    "closed" (by their owner), "load_failed" (``load``, or starting the subprocess, failed),
    "died" (the subprocess died in ``train``). ``started == running + sum(ended.values())``."""

    running: int
    started: int
    ended: Mapping[str, int]


ENDINGS = ("closed", "load_failed", "died")


class EngineSession:
    """Opens persistent tasks under ``<workdir>/<name>/<task_id>/``, within ``limits``, as
    ``limits.task_user`` when given (``task_user``)."""

    def __init__(self, workdir: str | os.PathLike, limits: EngineLimits | None = None,
                 inventory: GpuInventory | None = None,
                 ram: Callable[[], RamInfo] = psutil_ram, *, name: str = "session") -> None:
        self.workdir = os.path.join(os.path.abspath(workdir), name)
        self.pool = ResourcePool(limits if limits is not None else EngineLimits(), inventory, ram)
        self.task_user = self.pool.limits.run_as()
        self._handles: dict[int | str, TaskHandle] = {}
        self._lock = threading.Lock()
        self._started = 0
        self._ended: Counter[str] = Counter()

    def open(self, task: Task) -> TaskHandle:
        """Start ``task``'s subprocess and run its ``load``, waiting for a free process slot
        and for RAM to cover ``task.estimate_memory``; raises TaskError if ``load`` fails."""
        with self._lock:
            if task.task_id in self._handles:
                raise ValueError(f"task_id {task.task_id!r} is already open in this session")
            self._handles[task.task_id] = handle = TaskHandle(self, task)
            self._started += 1
        handle._open(os.path.join(self.workdir, str(task.task_id)))
        return handle

    async def open_async(self, task: Task) -> TaskHandle:
        return await _in_thread(self.open, task)

    def close(self) -> None:
        """Close every handle still open."""
        for handle in list(self._handles.values()):
            handle.close()

    def __enter__(self) -> EngineSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def counts(self) -> SessionCounts:
        """The session's tasks now, for metrics."""
        with self._lock:
            return SessionCounts(len(self._handles), self._started, dict(self._ended))

    def _forget(self, handle: TaskHandle, ending: str) -> None:
        with self._lock:
            if self._handles.get(handle.task.task_id) is handle:
                del self._handles[handle.task.task_id]
                self._ended[ending] += 1


class TaskHandle:
    """One open task of an EngineSession; ``device`` is where it last trained."""

    def __init__(self, session: EngineSession, task: Task) -> None:
        self.session = session
        self.task = task
        self.device: str | None = None
        self._pool = session.pool
        self._lock = threading.Lock()
        self._closed = False
        self._slot = False

    def train(self, round_input: Any = None) -> dict:
        """Run ``train`` once with ``task.round_input = round_input``; return its dict.

        Waits for a device that fits ``task.estimate_cuda_memory`` (else the default), keeping
        the last device when it still fits; a CUDA out-of-memory error is retried on another
        device up to ``oom_retries`` times. Raises TaskError when train fails; the task stays
        open unless its subprocess died.
        """
        task, pool = self.task, self._pool
        with self._lock:
            if not task.is_alive():
                raise TaskError(task.task_id, "train", "the task's subprocess is not running")
            estimate = resolve(task.estimate_cuda_memory, None, pool.limits.default_cuda_memory)
            task.attempts = []
            while True:
                try:
                    device = self._wait_for("train", lambda: pool.try_place(
                        task, estimate, pinned=task.pinned_device, tried=task.attempts,
                        preferred=self.device))
                except PlacementError as error:
                    raise TaskError(task.task_id, "train", str(error)) from None
                try:
                    task.start_train(device, round_input)
                    reply = task.receive()
                finally:
                    pool.trained(task)
                if reply.kind == "result":
                    self.device = device
                    return reply.data
                if reply.kind == "oom" and len(task.attempts) <= pool.limits.oom_retries:
                    continue
                if reply.kind == "oom":
                    raise TaskError(task.task_id, "train",
                                    oom_gave_up(task, pool.limits.oom_retries, reply.message))
                if reply.kind == "died":
                    self._end("died")
                raise TaskError(task.task_id, reply.stage, reply.message)

    async def train_async(self, round_input: Any = None) -> dict:
        return await _in_thread(self.train, round_input)

    def close(self) -> None:
        """End the task's subprocess and free its slot. A ``train`` or ``open`` in progress
        ends with TaskError (its subprocess is killed). Closing twice does nothing."""
        self._closed = True
        if not self._lock.acquire(blocking=False):
            self.task.kill()
            self._lock.acquire()
        try:
            self._end("closed")
        finally:
            self._lock.release()

    async def close_async(self) -> None:
        await _in_thread(self.close)

    def _open(self, workdir: str) -> None:
        task, pool = self.task, self._pool
        with self._lock:
            try:
                self._slot = self._wait_for("load", pool.try_process)
                try:
                    task.start(workdir, self.session.task_user)
                except Exception:
                    raise TaskError(task.task_id, "load", "the task could not be sent to its "
                                    "subprocess:\n" + traceback.format_exc()) from None
                try:
                    self._wait_for("load", lambda: pool.try_load(task, task.estimate_memory))
                except PlacementError as error:
                    raise TaskError(task.task_id, "load", str(error)) from None
                task.start_load()
                reply = task.receive()
                if reply.kind != "loaded":
                    raise TaskError(task.task_id, reply.stage, reply.message)
            except BaseException:
                self._end("closed" if self._closed else "load_failed")
                raise
            finally:
                pool.loaded(task)

    def _wait_for(self, stage: str, attempt: Callable[[], T]) -> T:
        """``attempt``'s first true result, waiting as the pool does; TaskError once closed."""
        def unless_closed() -> T | None:
            if self._closed:
                raise TaskError(self.task.task_id, stage, "the task was closed")
            return attempt() or None
        return self._pool.wait_for(unless_closed)

    def _end(self, ending: str) -> None:
        """Ends the subprocess and frees its slot; ``ending`` is how (one of ``ENDINGS``)."""
        self.task.exit()
        if self._slot:
            self._slot = False
            self._pool.release_process()
        self.session._forget(self, ending)
