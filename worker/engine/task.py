"""Task: one unit of user work, run in its own subprocess (load once, then train).

The parent side (``start``, ``start_load``, ``start_train``, ``receive``, ``exit``) talks to
``_child_main`` over a pipe. The child forks from the warm template (template.py), which has
imported the engine and what the engine's user asked for (torch, for the worker daemon); it
imports itself only what the template lacks.
"""

from __future__ import annotations

import atexit
import faulthandler
import multiprocessing
import os
import re
import signal
import sys
import time
import traceback
import weakref
from multiprocessing.connection import Connection, wait
from typing import Any, NamedTuple

from . import template
from .config import parse_size
from .confine import TaskUser, confine, give
from .status import TaskStatus

_NAME_FORBIDDEN = re.compile(r"[/\\\x00]")
_DEVICE = re.compile(r"cpu|cuda:\d+")
_LOG_NAME = "output.log"


def check_name(value: int | str, what: str) -> int | str:
    """``value`` if it can name a directory, else ValueError."""
    text = str(value)
    if not isinstance(value, (int, str)) or text in ("", ".", "..") or _NAME_FORBIDDEN.search(text):
        raise ValueError(f"{what} {value!r} cannot be used as a directory name")
    return value


def check_device(device: str | None) -> str | None:
    """``device`` if it is None, "cpu" or "cuda:N", else ValueError."""
    if device is not None and not (isinstance(device, str) and _DEVICE.fullmatch(device)):
        raise ValueError(f"device must be 'cpu' or 'cuda:N', not {device!r}")
    return device


_running: weakref.WeakSet[Task] = weakref.WeakSet()


@atexit.register
def _kill_running() -> None:
    """Kill tasks still running at exit, which multiprocessing would otherwise wait for."""
    for task in list(_running):
        task.kill()


class Reply(NamedTuple):
    """What a task's subprocess says back: kind is loaded, result, error, oom or died."""

    kind: str
    stage: str
    data: dict | None = None
    message: str | None = None
    seconds: float | None = None


class Task:
    """A unit of work: subclass it, implement ``load`` and ``train(device) -> dict``.

    ``device`` may pin the task ("cuda:1", "cpu"); it cannot change afterwards, and the
    scheduler sets ``device`` to the device it picked before ``train`` runs. Estimates are
    bytes or sizes such as "2GiB". Attributes set in the subprocess never come back: only
    what ``train`` returns does, as ``result``. Before each ``train`` the engine sets
    ``round_input`` to the value the caller passed for that call (None from the scheduler).
    Once loaded, ``imported`` lists the modules its process imported itself after it forked
    from the warm template (None where it started without one).
    """

    def __init__(self, task_id: int | str, device: str | None = None,
                 estimate_memory: int | str | None = None,
                 estimate_cuda_memory: int | str | None = None) -> None:
        self.__task_id = check_name(task_id, "task_id")
        self.__pinned_device = check_device(device)
        self.device: str | None = device
        self.estimate_memory = parse_size(estimate_memory)
        self.estimate_cuda_memory = parse_size(estimate_cuda_memory)
        self.workdir: str | None = None
        self.result: dict | None = None
        self.status = TaskStatus.INIT
        self.round_input: Any = None
        self.started: float | None = None
        self.load_seconds: float | None = None
        self.train_seconds: float | None = None
        self.attempts: list[str] = []
        self.imported: list[str] | None = None
        self._stage = "load"
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None

    @property
    def task_id(self) -> int | str:
        return self.__task_id

    @property
    def pinned_device(self) -> str | None:
        """The device given to the constructor, if any."""
        return self.__pinned_device

    def load(self) -> None:
        """Load data, on the CPU; runs once in the subprocess before any ``train``."""
        raise NotImplementedError

    def train(self, device: str) -> dict:
        """Train on ``device`` and return a picklable dict, the task's result."""
        raise NotImplementedError

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_process"] = state["_conn"] = None
        return state

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.task_id!r} {self.status.name}>"

    # Parent side.

    def start(self, workdir: str | os.PathLike | None = None, user: TaskUser | None = None) -> None:
        """Start the subprocess in ``workdir`` (default ``./<task_id>``), created if needed;
        as ``user`` (who then owns ``workdir``), when given, and confined (see confine.py)."""
        self._expect(TaskStatus.INIT)
        self.workdir = os.path.abspath(workdir if workdir is not None else str(self.task_id))
        os.makedirs(self.workdir, exist_ok=True)
        give(self.workdir, user, 0o700)
        context = template.context()
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(target=_child_main, args=(self, child_conn, user),
                                        name=f"task-{self.task_id}")
        try:
            self._process.start()
        except BaseException:
            self._conn.close()
            self._process = self._conn = None
            raise
        finally:
            child_conn.close()
        _running.add(self)
        self.started = time.time()
        self.status = TaskStatus.AVAILABLE

    def start_load(self) -> None:
        """Ask the subprocess to run ``load``."""
        self._expect(TaskStatus.AVAILABLE)
        self._command("load", ("load",))
        self.status = TaskStatus.LOADING

    def start_train(self, device: str, round_input: Any = None) -> None:
        """Ask the subprocess to run ``train(device)`` with ``round_input`` set."""
        self._expect(TaskStatus.WAITING, TaskStatus.INTERRUPT, TaskStatus.FINISHED,
                     TaskStatus.EXCEPTION)
        self.device = device
        self.attempts.append(device)
        self._command("train", ("train", device, round_input))
        self.status = TaskStatus.TRAINING

    def is_alive(self) -> bool:
        """Whether the subprocess is running."""
        return self._process is not None and self._process.is_alive()

    @property
    def connection(self) -> Connection | None:
        """The parent's end of the pipe, for ``multiprocessing.connection.wait``."""
        return self._conn

    @property
    def sentinel(self) -> int | None:
        """Ready once the subprocess has ended, for ``multiprocessing.connection.wait``."""
        return self._process.sentinel if self._process is not None else None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def receive(self) -> Reply:
        """Wait for the subprocess's next reply.

        Updates ``status``, ``result`` and the timings. A subprocess that ended without
        replying reads as a "died" reply whose message names its exit code or signal.
        """
        wait([self._conn, self._process.sentinel])
        try:
            reply = self._conn.recv() if self._conn.poll() else None
        except (EOFError, OSError):
            reply = None
        except Exception:  # noqa: BLE001 - a reply this process cannot rebuild is the task's error
            reply = Reply("error", self._stage, message=(
                f"task {self.task_id!r}: what {self._stage} returned cannot be rebuilt outside "
                "its subprocess (a CUDA tensor, or an object of a module only it imports?):\n"
                + traceback.format_exc()))
        if reply is None:
            reply = Reply("died", self._stage, message=self._death_message())
        if reply.seconds is not None:  # a death carries no timing: keep the ones measured
            if reply.stage == "load":
                self.load_seconds = reply.seconds
            else:
                self.train_seconds = reply.seconds
        if reply.kind == "loaded":
            self.imported = reply.data["imported"]
            self.status = TaskStatus.WAITING
            self._stage = "train"  # what comes next; a death while waiting for a GPU is in it
        elif reply.kind == "result":
            self.result = reply.data
            self.status = TaskStatus.FINISHED
        elif reply.kind == "oom":
            self.status = TaskStatus.INTERRUPT
        else:
            self.status = TaskStatus.EXCEPTION
        return reply

    def exit(self, timeout: float = 5.0) -> None:
        """End the subprocess: ask it to leave, kill it after ``timeout`` seconds."""
        if self._process is None:
            return
        if self._process.is_alive():
            self._send(("exit",))
            self._process.join(timeout)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
        _kill_group(self._process.pid)  # what the task started (DataLoader workers...) ends too
        self._conn.close()
        self._process.close()
        self._process = self._conn = None
        _running.discard(self)
        if self.status not in (TaskStatus.FINISHED, TaskStatus.EXCEPTION):
            self.status = TaskStatus.EXITED

    def kill(self) -> None:
        """Kill the subprocess now, from any thread; a stage in progress reads as died."""
        process = self._process
        try:
            if process is not None:
                _kill_group(process.pid)
                process.kill()
        except (ValueError, AttributeError):
            pass  # closed meanwhile by exit(), or not started yet

    def record(self) -> dict:
        """Stage, device and timings, as kept in a group's result."""
        return {"stage": self._stage, "device": self.device, "attempts": list(self.attempts),
                "started": self.started, "finished": time.time(),
                "load_seconds": self.load_seconds, "train_seconds": self.train_seconds,
                "log": os.path.join(self.workdir, _LOG_NAME) if self.workdir else None}

    def _expect(self, *states: TaskStatus) -> None:
        if self.status not in states:
            names = ", ".join(s.name for s in states)
            raise RuntimeError(f"task {self.task_id!r} is {self.status.name}, not {names}")

    def _command(self, stage: str, message: tuple) -> None:
        if self._process is None:
            raise RuntimeError(f"task {self.task_id!r} has no subprocess")
        self._stage = stage
        self._send(message)

    def _send(self, message: tuple) -> None:
        try:
            self._conn.send(message)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the subprocess is gone; its sentinel reports it

    def _death_message(self) -> str:
        self._process.join(1.0)
        code = self._process.exitcode
        if code is None:
            how = "closed its pipe"
        elif code < 0:
            how = f"was killed by signal {_signal_name(-code)} (exit code {code})"
        else:
            how = f"exited with code {code}"
        message = f"task {self.task_id!r}: its subprocess {how} during {self._stage}"
        tail = _log_tail(os.path.join(self.workdir, _LOG_NAME))
        return f"{message}\nlast output:\n{tail}" if tail else message


def _kill_group(pid: int | None) -> None:
    """SIGKILL the process group a task's subprocess leads (see _child_main's setsid)."""
    if pid is None:
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # nothing left of it


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # a real-time signal has no name
        return str(number)


def _log_tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.path.getsize(path) - 8192))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


# Child side.

def _child_main(task: Task, conn: Connection, user: TaskUser | None) -> None:
    """The subprocess: run commands from the parent until told to exit or the pipe closes.

    It enters its work dir before it is confined: the task reaches its files from there even
    where the directories above are closed to it. Its ``load`` reply says which modules it
    imported itself, unless it did not fork from the template.
    """
    # Imported here: the template imports it only after all it preloads.
    from . import inherited

    template.leave()
    os.setsid()  # its own process group, so that killing the task kills what it started
    os.chdir(task.workdir)
    log = os.open(_LOG_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    faulthandler.enable()
    confine(user)
    # Numbers GPUs as NvmlInventory does.
    os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    while True:
        try:
            command = conn.recv()
        except EOFError:
            return
        if command[0] == "exit":
            return
        stage = command[0]
        started = time.perf_counter()
        try:
            if stage == "load":
                task.load()
                reply = Reply("loaded", stage, data={"imported": inherited.imported_here()
                                                     if inherited.from_template() else None})
            else:
                _, task.device, task.round_input = command
                reply = Reply("result", stage, data=_as_dict(task.train(task.device)))
        except (Exception, SystemExit) as error:
            # Only train runs on a GPU and is retried on another: an OOM in load is an error.
            kind = "oom" if stage == "train" and _is_cuda_oom(error) else "error"
            reply = Reply(kind, stage, message=traceback.format_exc())
        reply = reply._replace(seconds=time.perf_counter() - started)
        task.round_input = None
        _release_cuda_cache()
        try:
            conn.send(reply)
        except Exception:
            conn.send(Reply("error", stage, message="what train returned cannot be sent back:\n"
                            + traceback.format_exc()))
        sys.stdout.flush()
        sys.stderr.flush()


def _as_dict(data: Any) -> dict:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TypeError(f"train must return a dict, not {type(data).__name__}")
    return data


def _is_cuda_oom(error: BaseException) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(error, torch.cuda.OutOfMemoryError)


def _release_cuda_cache() -> None:
    """Hand cached CUDA memory back, so other tasks see it free between trains."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
