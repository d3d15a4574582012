"""TaskGroup: tasks run together, with their results."""

from __future__ import annotations

import random

from .config import parse_size
from .status import TaskStatus
from .task import Task, check_device, check_name


class TaskGroup:
    """Tasks with no dependencies between them, run concurrently by a Scheduler.

    ``device`` pins every task of the group that does not pin its own; the estimates apply to
    tasks that give none. ``index`` and ``workdir`` are set by the scheduler; ``result`` maps
    each task_id to a dict with its status, stage, device, timings and either ``data`` (what
    ``train`` returned) or ``message`` (the error and its traceback).
    """

    def __init__(self, group_name: str | None = None, device: str | None = None, *,
                 estimate_memory: int | str | None = None,
                 estimate_cuda_memory: int | str | None = None) -> None:
        self.index = -1
        self.__group_name = None if group_name is None else check_name(group_name, "group_name")
        self.__device = check_device(device)
        self.estimate_memory = parse_size(estimate_memory)
        self.estimate_cuda_memory = parse_size(estimate_cuda_memory)
        self.workdir: str | None = None
        self.result: dict[int | str, dict] = {}
        self._tasks: dict[int | str, Task] = {}

    @property
    def group_name(self) -> str:
        return self.__group_name if self.__group_name is not None else f"group-{self.index}"

    @property
    def device(self) -> str | None:
        return self.__device

    @property
    def tasks(self) -> list[Task]:
        """The group's tasks, in the order they were added."""
        return list(self._tasks.values())

    def add_task(self, task: Task) -> None:
        """Add a task; its id must be unique in the group."""
        if task.task_id in self._tasks:
            raise ValueError(f"task_id {task.task_id!r} is already in group {self.group_name}")
        self._tasks[task.task_id] = task

    def get_task(self, task_id: int | str) -> Task | None:
        return self._tasks.get(task_id)

    def report_finish(self, task_id: int | str, data: dict | None = None) -> None:
        """Record that a task finished, with what its ``train`` returned."""
        task = self._tasks[task_id]
        task.status = TaskStatus.FINISHED
        task.result = data
        self.result[task_id] = {"status": TaskStatus.FINISHED.name, **task.record(), "data": data}

    def report_exception(self, task_id: int | str, stage: str, message: str) -> None:
        """Record that a task failed in ``stage`` ("load" or "train") with ``message``."""
        task = self._tasks[task_id]
        task.status = TaskStatus.EXCEPTION
        self.result[task_id] = {"status": TaskStatus.EXCEPTION.name, **task.record(),
                                "stage": stage, "message": message}

    def finished(self) -> bool:
        """Whether every task has finished or failed."""
        return len(self.result) == len(self._tasks)

    def retrieve_task(self, status: TaskStatus) -> Task | None:
        """A task in ``status``, picked at random, or None."""
        matching = [task for task in self._tasks.values() if task.status is status]
        return random.choice(matching) if matching else None
