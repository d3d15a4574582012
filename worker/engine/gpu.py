"""What GPUs there are and how much of each is free, behind one small interface."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field, replace
from typing import Mapping, Protocol

log = logging.getLogger("deltaflow.engine")


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as NVML sees it now; ``index`` is NVML's, and the device is ``cuda:{index}``.

    ``used_by_pid`` is the GPU memory each process holds, where the driver says.
    """

    index: int
    name: str
    free_bytes: int
    total_bytes: int
    utilization_pct: float = 0.0
    used_by_pid: Mapping[int, int] = field(default_factory=dict)

    @property
    def device(self) -> str:
        return f"cuda:{self.index}"


class GpuInventory(Protocol):
    """Anything that lists the machine's GPUs."""

    def devices(self) -> list[GpuInfo]: ...


class NvmlInventory:
    """GPUs read through pynvml; no GPUs where NVML or its library is missing.

    Indices are CUDA's with ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (which task subprocesses set):
    NVML's own, or positions in ``CUDA_VISIBLE_DEVICES`` (indices or UUIDs) where it is set.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nvml = None
        self._tried = False

    def devices(self) -> list[GpuInfo]:
        with self._lock:
            nvml = self._init()
            if nvml is None:
                return []
            try:
                handles = _handles(nvml)
            except nvml.NVMLError as error:
                log.warning("NVML cannot list the GPUs (%s): placing tasks as if there were none",
                            error)
                return []
            found = []
            for index, handle in enumerate(handles):
                try:
                    found.append(self._read(nvml, index, handle))
                except nvml.NVMLError as error:  # that GPU only: the others stay usable
                    log.warning("NVML cannot read cuda:%d (%s): no task goes there for now",
                                index, error)
            return found

    def _init(self):
        if not self._tried:
            self._tried = True
            try:
                import pynvml
                pynvml.nvmlInit()
                self._nvml = pynvml
            except Exception:  # no library, no driver, no permission: no GPUs
                self._nvml = None
        return self._nvml

    @staticmethod
    def _read(nvml, index: int, handle) -> GpuInfo:
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        try:
            utilization = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except nvml.NVMLError:
            utilization = 0.0
        try:
            used = {p.pid: p.usedGpuMemory or 0
                    for p in nvml.nvmlDeviceGetComputeRunningProcesses(handle)}
        except nvml.NVMLError:
            used = {}
        name = nvml.nvmlDeviceGetName(handle)
        return GpuInfo(index=index, name=name.decode() if isinstance(name, bytes) else name,
                       free_bytes=memory.free, total_bytes=memory.total,
                       utilization_pct=utilization, used_by_pid=used)


def _handles(nvml) -> list:
    """NVML handles of the GPUs CUDA will number 0, 1, ..."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
    handles = []
    for entry in (part.strip() for part in visible.split(",")):
        try:
            handles.append(nvml.nvmlDeviceGetHandleByIndex(int(entry)) if entry.isdigit()
                           else nvml.nvmlDeviceGetHandleByUUID(entry))
        except nvml.NVMLError:
            break  # CUDA ignores an unknown entry and every one after it
    return handles


class FakeInventory:
    """A fixed list of GPUs, for tests; ``set`` changes one of them."""

    def __init__(self, gpus: list[GpuInfo] | None = None) -> None:
        self._lock = threading.Lock()
        self._gpus = list(gpus or [])

    def devices(self) -> list[GpuInfo]:
        with self._lock:
            return list(self._gpus)

    def set(self, index: int, **changes) -> None:
        with self._lock:
            self._gpus = [replace(g, **changes) if g.index == index else g for g in self._gpus]
