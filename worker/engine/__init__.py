"""The worker's engine, after Fedflow: tasks in subprocesses, grouped, placed on GPUs.

A ``Task`` loads once on the CPU and then trains on the device the engine picks, in its own
subprocess. ``Scheduler.execute(group)`` runs a ``TaskGroup``'s tasks concurrently within
``EngineLimits``; ``EngineSession`` keeps tasks alive to train again and again (one per
federated task in the worker daemon). Task processes fork from a warm template that
``warm_template(modules)`` starts with those modules imported (template.py).
"""

from .config import EngineLimits, add_engine_arguments, limits_from_args, parse_size
from .gpu import FakeInventory, GpuInfo, GpuInventory, NvmlInventory
from .group import TaskGroup
from .placement import PlacementError, choose_device
from .scheduler import Scheduler
from .session import ENDINGS, EngineSession, SessionCounts, TaskError, TaskHandle
from .status import TaskStatus
from .task import Task
from .template import warm_template

__all__ = [
    "ENDINGS", "EngineLimits", "EngineSession", "FakeInventory", "GpuInfo", "GpuInventory",
    "NvmlInventory", "PlacementError", "Scheduler", "SessionCounts", "Task", "TaskError",
    "TaskGroup", "TaskHandle", "TaskStatus", "add_engine_arguments", "choose_device",
    "limits_from_args", "parse_size", "warm_template",
]
