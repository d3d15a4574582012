"""The warm template every task process forks from, and what a task process drops of it.

The template is multiprocessing's fork server: a process that the engine starts by exec, not
by fork, so it holds nothing of the engine's memory (no key, no session, no connection), only
the modules it imported once (``warm_template``: for the worker daemon, torch and deltaflow's
learning runtime) and the environment. Each task process forks from it and so imports none of
them itself; ``inherited`` tells it what it got. Its socket is a file only the engine's user
may open (0600, in a 0700 directory): a task process running as the task user cannot ask it
for a process of its own. The fork changes where a task process starts, not what it may do: it
is confined afterwards as before (``task._child_main``, confine.py), and ``leave`` closes what
it would otherwise inherit of the engine's own processes and draws its own randomness. No CUDA
call happens in the template (importing torch makes none), so a forked task process can still
use a GPU.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from collections.abc import Iterable
from multiprocessing import forkserver, resource_tracker
from multiprocessing.context import BaseContext

_ENGINE = "worker.engine.task"  # what every task process runs
_MARK = "worker.engine.inherited"  # imported last: records what came before it
# Slow to import; without warm_template the template imports those the engine had imported.
_HEAVY = ("numpy", "pandas", "torch")

_context: BaseContext | None = None
_lock = threading.Lock()


def warm_template(modules: Iterable[str] = ()) -> None:
    """Starts the template now, importing ``modules`` besides the engine's own; it imports in
    the background while the caller goes on, and the first task process waits for it. Once it
    runs, later calls change nothing: a module it lacks, a task process imports itself."""
    _start(list(modules))


def context() -> BaseContext:
    """Where task processes start: the template (started now, with whichever of numpy, pandas
    and torch this process has imported, unless warm_template started it), else, on a
    platform without a fork server, a fresh interpreter each ("spawn") that imports what it
    needs."""
    if _context is None:
        _start([name for name in _HEAVY if name in sys.modules])
    return _context


def _start(modules: list[str]) -> None:
    global _context
    with _lock:
        if _context is not None:
            return
        if "forkserver" not in multiprocessing.get_all_start_methods():
            _context = multiprocessing.get_context("spawn")
            return
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([_ENGINE, *modules, _MARK])
        forkserver.ensure_running()
        _context = context


def leave() -> None:
    """In a task process, before the task's code runs: closes the ends of the engine's own
    processes it inherited, the template's liveness pipe and the resource tracker's (through
    which it could have the engine's user unlink files in /dev/shm), so that it holds only its
    pipe to the engine; multiprocessing used later in the task starts a tracker of its own.
    Then seeds numpy's global generator afresh: every process forked from the template would
    otherwise draw the same numbers (Python's ``random`` reseeds itself at a fork; torch's
    default generator starts from the same fixed seed in any new process)."""
    server = forkserver._forkserver
    if server._forkserver_alive_fd is not None:
        os.close(server._forkserver_alive_fd)
        server._forkserver_alive_fd = None
    tracker = resource_tracker._resource_tracker
    if tracker._fd is not None:
        os.close(tracker._fd)
        tracker._fd = tracker._pid = None
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()
