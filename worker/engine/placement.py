"""Choosing the device a task trains on: a pure function of the GPUs' state."""

from __future__ import annotations

from typing import Collection, Mapping, Sequence

from .config import EngineLimits, format_size
from .gpu import GpuInfo


class PlacementError(Exception):
    """The task can never get what it asks for: no such GPU, none large enough, too little RAM."""


def choose_device(estimate: int, gpus: Sequence[GpuInfo], unseen: Mapping[int, int],
                  limits: EngineLimits, *, pinned: str | None = None,
                  tried: Collection[str] = (), preferred: str | None = None) -> str | None:
    """The device for a task needing ``estimate`` bytes of GPU memory, or None to wait.

    ``unseen`` is memory per GPU index promised to tasks already placed that NVML does not
    show as used yet. A GPU fits when it is allowed, no busier than the utilisation limit,
    and its free memory less ``unseen`` and the headroom covers the estimate. ``pinned``
    limits the choice to that device; without GPUs the task runs on "cpu". Among fitting GPUs,
    ``preferred`` wins, then those not in ``tried``, then the one with the most memory free.
    Raises PlacementError when no allowed GPU is large enough, or a pinned one is missing.
    """
    if pinned == "cpu":
        return "cpu"
    allowed = [g for g in gpus
               if limits.allowed_gpus is None or g.index in limits.allowed_gpus]
    if pinned is not None:
        allowed = [g for g in allowed if g.device == pinned]
        if not allowed:
            known = ", ".join(g.device for g in gpus) or "none"
            raise PlacementError(f"pinned to {pinned}, which is not an allowed GPU "
                                 f"(GPUs: {known}; allowed: {limits.allowed_gpus or 'all'})")
    elif not allowed:
        return "cpu"

    def room(gpu: GpuInfo) -> int:
        return (gpu.free_bytes - unseen.get(gpu.index, 0)
                - limits.gpu_headroom_for(gpu.total_bytes))

    largest = max(allowed, key=lambda g: g.total_bytes - limits.gpu_headroom_for(g.total_bytes))
    capacity = largest.total_bytes - limits.gpu_headroom_for(largest.total_bytes)
    if estimate > capacity:
        raise PlacementError(f"needs {format_size(estimate)} of GPU memory; the largest GPU "
                             f"({largest.device}, {largest.name}) offers "
                             f"{format_size(capacity)} after headroom")
    fitting = [g for g in allowed
               if g.utilization_pct <= limits.max_gpu_utilization and room(g) >= estimate]
    if not fitting:
        return None
    if preferred in {g.device for g in fitting} and preferred not in tried:
        return preferred
    fresh = [g for g in fitting if g.device not in tried] or fitting
    return max(fresh, key=room).device
