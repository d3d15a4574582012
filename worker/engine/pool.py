"""ResourcePool: process slots, RAM and GPU memory that running tasks have been promised."""

from __future__ import annotations

import threading
from typing import Callable, Collection, NamedTuple, TypeVar

import psutil

from .config import EngineLimits, format_size
from .gpu import GpuInventory, NvmlInventory
from .placement import PlacementError, choose_device
from .task import Task

T = TypeVar("T")


class RamInfo(NamedTuple):
    available: int
    total: int


def psutil_ram() -> RamInfo:
    """This machine's available and total RAM."""
    memory = psutil.virtual_memory()
    return RamInfo(memory.available, memory.total)


class ResourcePool:
    """The books of one engine, safe to use from several threads.

    ``try_*`` methods take a resource and return something, or return None/False when it
    must wait; the matching release methods give it back and wake ``wait_for``.
    """

    def __init__(self, limits: EngineLimits, inventory: GpuInventory | None = None,
                 ram: Callable[[], RamInfo] = psutil_ram) -> None:
        self.limits = limits
        self.inventory = inventory if inventory is not None else NvmlInventory()
        self._ram = ram
        self.changed = threading.Condition()
        self._processes = 0
        self._loading: dict[Task, int] = {}
        self._training: dict[Task, tuple[int, int]] = {}  # task -> (GPU index, estimate)

    def wait_for(self, attempt: Callable[[], T | None]) -> T:
        """Call ``attempt`` until it returns something, waking on releases and every
        ``poll_interval`` seconds (memory other programs free wakes nobody)."""
        with self.changed:
            while (result := attempt()) is None:
                self.changed.wait(self.limits.poll_interval)
            return result

    def try_process(self) -> bool:
        """Take a subprocess slot if one is free."""
        with self.changed:
            if self._processes >= self.limits.max_tasks:
                return False
            self._processes += 1
            return True

    def release_process(self) -> None:
        with self.changed:
            self._processes -= 1
            self.changed.notify_all()

    def try_load(self, task: Task, estimate: int | None) -> bool:
        """Take a loading slot and ``estimate`` bytes of RAM for ``task`` if both are free.

        Raises PlacementError when the machine's whole RAM is less than the estimate.
        """
        with self.changed:
            if len(self._loading) >= self.limits.max_loading:
                return False
            if estimate:
                ram = self._ram()
                if estimate > ram.total:
                    raise PlacementError(f"needs {format_size(estimate)} of memory; "
                                         f"this machine has {format_size(ram.total)}")
                if ram.available - sum(self._loading.values()) < estimate:
                    return False
            self._loading[task] = estimate or 0
            return True

    def loaded(self, task: Task) -> None:
        """``task`` finished loading: its RAM now shows as used, its slot is free."""
        with self.changed:
            if self._loading.pop(task, None) is not None:
                self.changed.notify_all()

    def try_place(self, task: Task, estimate: int, *, pinned: str | None = None,
                  tried: Collection[str] = (), preferred: str | None = None) -> str | None:
        """A device for ``task`` with ``estimate`` bytes of GPU memory promised to it, or
        None when it must wait; see ``choose_device``."""
        with self.changed:
            gpus = self.inventory.devices()
            unseen: dict[int, int] = {}
            by_index = {g.index: g for g in gpus}
            for other, (index, promised) in self._training.items():
                used = by_index[index].used_by_pid.get(other.pid, 0) if index in by_index else 0
                unseen[index] = unseen.get(index, 0) + max(0, promised - used)
            device = choose_device(estimate, gpus, unseen, self.limits, pinned=pinned,
                                   tried=tried, preferred=preferred)
            if device is not None and device.startswith("cuda:"):
                self._training[task] = (int(device.removeprefix("cuda:")), estimate)
            return device

    def trained(self, task: Task) -> None:
        """``task`` left ``train``: its GPU memory is no longer promised."""
        with self.changed:
            if self._training.pop(task, None) is not None:
                self.changed.notify_all()
