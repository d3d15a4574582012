"""The engine's limits, from defaults, a TOML file and command-line flags."""

from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
from dataclasses import dataclass

from sdk.sizes import GiB, MiB, parse_size

from .confine import TaskUser, find_task_user


def format_size(size: int) -> str:
    """``size`` bytes as GiB, for messages."""
    return f"{size / GiB:.2f} GiB"


@dataclass(frozen=True)
class EngineLimits:
    """What the engine may use on this machine.

    max_tasks: task subprocesses alive at once; max_loading: tasks in ``load`` at once;
    default_cuda_memory: the GPU memory a task needs when neither it nor its group says;
    a GPU keeps max(gpu_headroom, gpu_headroom_fraction x its total) free; a GPU busier than
    max_gpu_utilization percent takes no new task; a CUDA out-of-memory error is retried
    oom_retries times; allowed_gpus (NVML indices) limits the GPUs used, None meaning all;
    poll_interval is how often (seconds) memory and GPUs are re-read while a task waits for
    memory that only other programs can free; task_user is the OS user task subprocesses run
    as (the engine must be root: see confine.py), None meaning the engine's own; warm_start:
    whether the worker daemon starts the template its task processes fork from (template.py)
    as it starts, where its policy accepts learning code, rather than at its first learning
    task (the template then imports torch meanwhile: about 3 s of a core, 0.3 GiB).
    """

    max_tasks: int = os.cpu_count() or 1
    max_loading: int = os.cpu_count() or 1
    default_cuda_memory: int = GiB
    gpu_headroom: int = 256 * MiB
    gpu_headroom_fraction: float = 0.05
    max_gpu_utilization: float = 100.0
    oom_retries: int = 2
    allowed_gpus: tuple[int, ...] | None = None
    poll_interval: float = 0.5
    task_user: str | None = None
    warm_start: bool = True

    def __post_init__(self) -> None:
        for name in ("default_cuda_memory", "gpu_headroom"):
            object.__setattr__(self, name, parse_size(getattr(self, name)))
        if self.allowed_gpus is not None:
            object.__setattr__(self, "allowed_gpus", tuple(int(i) for i in self.allowed_gpus))
        if self.max_tasks < 1 or self.max_loading < 1:
            raise ValueError("max_tasks and max_loading must be at least 1")
        if self.oom_retries < 0:
            raise ValueError("oom_retries cannot be negative")
        if not 0 <= self.gpu_headroom_fraction < 1:
            raise ValueError("gpu_headroom_fraction must be in [0, 1)")
        if not 0 < self.max_gpu_utilization <= 100:
            raise ValueError("max_gpu_utilization must be in (0, 100]")
        if self.poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        self.run_as()  # a task user this process cannot switch to is refused now

    def run_as(self) -> TaskUser | None:
        """The task user, None without one; ValueError where the engine cannot switch to it."""
        return find_task_user(self.task_user) if self.task_user is not None else None

    def gpu_headroom_for(self, total_bytes: int) -> int:
        """Bytes to keep free on a GPU with ``total_bytes`` of memory."""
        return max(self.gpu_headroom, int(self.gpu_headroom_fraction * total_bytes))


def _gpu_list(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.replace(" ", "").split(",") if part)


def _yes_no(text: str) -> bool:
    if text not in ("yes", "no"):
        raise argparse.ArgumentTypeError(f"expected yes or no, not {text!r}")
    return text == "yes"


# flag, EngineLimits field, argparse type, help
_FLAGS = [
    ("--max-tasks", "max_tasks", int, "task subprocesses alive at once (default: CPU count)"),
    ("--max-loading", "max_loading", int, "tasks loading data at once (default: CPU count)"),
    ("--default-gpu-memory", "default_cuda_memory", parse_size,
     "GPU memory a task needs when it does not say (default: 1GiB)"),
    ("--gpu-headroom", "gpu_headroom", parse_size,
     "GPU memory always left free, at least (default: 256MiB)"),
    ("--gpu-headroom-fraction", "gpu_headroom_fraction", float,
     "fraction of each GPU's memory always left free, at least (default: 0.05)"),
    ("--max-gpu-utilization", "max_gpu_utilization", float,
     "a GPU busier than this percentage takes no new task (default: 100)"),
    ("--oom-retries", "oom_retries", int,
     "retries of a task after CUDA out-of-memory, on another GPU when one fits (default: 2)"),
    ("--gpus", "allowed_gpus", _gpu_list, "GPUs the engine may use, e.g. 0,1 (default: all)"),
    ("--engine-poll-interval", "poll_interval", float,
     "seconds between re-reads of free memory while a task waits for it (default: 0.5)"),
    ("--task-user", "task_user", str,
     ("OS user task subprocesses run as, with no network and only their own files; the worker "
      "must run as root (default: the worker's user, confined only by a network namespace when "
      "root)")),
    ("--warm-start", "warm_start", _yes_no,
     "yes: start the template task processes fork from (torch imported) as the worker starts, "
     "where its policy accepts learning code; no: at the first learning task (default: yes)"),
]


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the engine's flags, and ``--engine-config PATH`` (TOML, an ``[engine]`` table)."""
    group = parser.add_argument_group("engine")
    group.add_argument("--engine-config", dest="engine_config", metavar="PATH",
                       help="TOML file whose [engine] table sets these limits; flags win")
    for flag, field, kind, text in _FLAGS:
        group.add_argument(flag, dest=f"engine_{field}", type=kind, default=None, help=text)


def limits_from_args(args: argparse.Namespace) -> EngineLimits:
    """EngineLimits from defaults, then the ``--engine-config`` file, then the flags given."""
    values: dict = {}
    if getattr(args, "engine_config", None):
        values.update(load_engine_config(args.engine_config))
    for _, field, _, _ in _FLAGS:
        given = getattr(args, f"engine_{field}", None)
        if given is not None:
            values[field] = given
    return EngineLimits(**values)


def load_engine_config(path: str | os.PathLike) -> dict:
    """The ``[engine]`` table of a TOML file, keys as EngineLimits fields (dashes allowed)."""
    with open(path, "rb") as handle:
        table = tomllib.load(handle).get("engine", {})
    fields = {f.name for f in dataclasses.fields(EngineLimits)}
    values = {key.replace("-", "_"): value for key, value in table.items()}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"{path}: unknown [engine] keys {unknown}; known: {sorted(fields)}")
    return values
