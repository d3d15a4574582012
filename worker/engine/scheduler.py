"""Scheduler: runs task groups in order, the tasks of each concurrently within the limits."""

from __future__ import annotations

import os
import traceback
from collections import deque
from multiprocessing.connection import wait
from typing import Callable, Iterable

from .config import EngineLimits
from .confine import TaskUser
from .gpu import GpuInventory
from .group import TaskGroup
from .placement import PlacementError
from .pool import RamInfo, ResourcePool, psutil_ram
from .report import write_reports
from .status import TaskStatus
from .task import Reply, Task


def resolve(task_value: int | None, group_value: int | None, default: int | None) -> int | None:
    """A task's estimate, else its group's, else the default."""
    if task_value is not None:
        return task_value
    return group_value if group_value is not None else default


def oom_gave_up(task: Task, retries: int, message: str) -> str:
    """The error of a task whose every try ran out of CUDA memory."""
    return (f"CUDA out of memory on {', '.join(task.attempts)}; gave up after {retries} "
            f"retries. Last error:\n{message}")


class Scheduler:
    """Runs groups under ``workdir``: a group's tasks in ``<workdir>/<group_name>/<task_id>/``,
    its reports in ``<workdir>/reports/``.

    The loop sleeps in ``multiprocessing.connection.wait`` on the tasks' pipes and process
    sentinels; it wakes when a task replies or dies, and every ``poll_interval`` seconds only
    while a task waits for RAM or GPU memory.
    """

    def __init__(self, workdir: str | os.PathLike, limits: EngineLimits | None = None,
                 inventory: GpuInventory | None = None,
                 ram: Callable[[], RamInfo] = psutil_ram) -> None:
        self.workdir = os.path.abspath(workdir)
        self.limits = limits if limits is not None else EngineLimits()
        self.pool = ResourcePool(self.limits, inventory, ram)
        self.task_user = self.limits.run_as()
        self._groups_run = 0

    def execute(self, group: TaskGroup) -> dict:
        """Run every task of ``group``, write its reports, and return ``group.result``."""
        group.index = self._groups_run
        self._groups_run += 1
        group.workdir = os.path.join(self.workdir, group.group_name)
        os.makedirs(group.workdir, exist_ok=True)
        _GroupRun(group, self.pool, self.task_user).run()
        write_reports(group, os.path.join(self.workdir, "reports"))
        return group.result

    def execute_all(self, groups: Iterable[TaskGroup]) -> list[dict]:
        """Run ``groups`` one after another; their results, in order."""
        return [self.execute(group) for group in groups]


class _GroupRun:
    """The state of one group while it runs."""

    def __init__(self, group: TaskGroup, pool: ResourcePool, task_user: TaskUser | None) -> None:
        self.group = group
        self.pool = pool
        self.task_user = task_user
        self.limits = pool.limits
        self.pending = deque(t for t in group.tasks if t.task_id not in group.result)
        self.live: list[Task] = []

    def run(self) -> None:
        try:
            while not self.group.finished():
                blocked = self._advance()
                owners = {}
                for task in self.live:
                    owners[task.connection] = owners[task.sentinel] = task
                timeout = self.limits.poll_interval if blocked or not owners else None
                handled = set()
                for ready in wait(list(owners), timeout):
                    task = owners[ready]
                    if task not in handled and task in self.live:
                        handled.add(task)
                        self._handle(task, task.receive())
        finally:
            for task in list(self.live):  # only when interrupted
                task.kill()
                self._end(task)

    def _advance(self) -> bool:
        """Start, load and place every task that can go on; True if one waits for memory."""
        while self.pending and self.pool.try_process():
            task = self.pending.popleft()
            try:
                task.start(os.path.join(self.group.workdir, str(task.task_id)), self.task_user)
            except Exception:
                self.pool.release_process()
                self.group.report_exception(task.task_id, "load", "the task could not be sent "
                                            "to its subprocess:\n" + traceback.format_exc())
                continue
            self.live.append(task)
        blocked = False
        for task in list(self.live):
            try:
                if task.status is TaskStatus.AVAILABLE:
                    blocked |= not self._load(task)
                elif task.status in (TaskStatus.WAITING, TaskStatus.INTERRUPT):
                    blocked |= not self._place(task)
            except PlacementError as error:
                stage = "load" if task.status is TaskStatus.AVAILABLE else "train"
                self._fail(task, stage, f"task {task.task_id!r} cannot run: {error}")
        return blocked

    def _load(self, task: Task) -> bool:
        estimate = resolve(task.estimate_memory, self.group.estimate_memory, None)
        if not self.pool.try_load(task, estimate):
            return False
        task.start_load()
        return True

    def _place(self, task: Task) -> bool:
        estimate = resolve(task.estimate_cuda_memory, self.group.estimate_cuda_memory,
                           self.limits.default_cuda_memory)
        pinned = task.pinned_device or self.group.device
        device = self.pool.try_place(task, estimate, pinned=pinned, tried=task.attempts)
        if device is None:
            return False
        task.start_train(device)
        return True

    def _handle(self, task: Task, reply: Reply) -> None:
        self.pool.loaded(task)
        if reply.kind == "loaded":
            return
        self.pool.trained(task)
        if reply.kind == "result":
            self.group.report_finish(task.task_id, reply.data)
            self._end(task)
        elif reply.kind == "oom" and len(task.attempts) > self.limits.oom_retries:
            self._fail(task, "train", oom_gave_up(task, self.limits.oom_retries, reply.message))
        elif reply.kind != "oom":
            self._fail(task, reply.stage, reply.message)

    def _fail(self, task: Task, stage: str, message: str) -> None:
        self.group.report_exception(task.task_id, stage, message)
        self._end(task)

    def _end(self, task: Task) -> None:
        self.live.remove(task)
        self.pool.loaded(task)
        self.pool.trained(task)
        task.exit()
        self.pool.release_process()
