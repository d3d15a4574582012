"""Confinement of a task's subprocess, where the engine runs as root.

Before the task's ``load`` (so before any of its submitter's code is unpickled) the subprocess
gets a network namespace of its own, in which nothing, not even loopback, is reachable; with a
task user (``--task-user``) it then becomes that user, with no supplementary groups, and can
read only what is given to that user: its own work dir and what the daemon hands it. Its pipe to
the engine is an inherited fd, and keeps working. An engine that is not root confines nothing.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

CLONE_NEWNET = 0x40000000


class TaskUser(NamedTuple):
    """The OS user tasks run as."""

    name: str
    uid: int
    gid: int


def find_task_user(name: str) -> TaskUser:
    """The user ``name``, if this process may switch to it; ValueError saying what to fix."""
    if os.geteuid() != 0:
        raise ValueError(f"--task-user {name}: only a worker running as root can run tasks as "
                         "another user; start it as root, or without --task-user")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ValueError(f"--task-user {name}: no such user on this machine; create one (e.g. "
                         f"useradd --system --no-create-home {name})") from None
    if entry.pw_uid == 0:
        raise ValueError(f"--task-user {name} is root; name an unprivileged user")
    user = TaskUser(name, entry.pw_uid, entry.pw_gid)
    _check_python(user)
    return user


def _check_python(user: TaskUser) -> None:
    """ValueError unless ``user`` can run this Python and read its standard library."""
    try:
        ran = subprocess.run([sys.executable, "-c", "import encodings.cp437"], user=user.uid,
                             group=user.gid, extra_groups=[], capture_output=True, timeout=60,
                             check=False)
        runs = ran.returncode == 0
    except OSError:
        runs = False
    if not runs:
        raise ValueError(f"--task-user {user.name} cannot run this Python ({sys.executable}, "
                         f"installed in {sys.base_prefix}): tasks run it as that user, so let "
                         "it read Python, its packages and deltaflow (e.g. chmod o+x on a "
                         "private home directory above them)")


def give(path: str | os.PathLike, user: TaskUser | None, mode: int = 0o600) -> None:
    """Makes ``path`` the task user's own, with ``mode``; nothing without a task user."""
    if user is not None:
        os.chown(path, user.uid, user.gid)
        os.chmod(path, mode)


def confine(user: TaskUser | None) -> None:
    """In a task's subprocess: a network namespace of its own (where root), then ``user``.

    Without a task user the namespace is taken where the kernel allows it; with one, a failure
    is an error, as is any way back to root afterwards.
    """
    if os.geteuid() != 0:
        return
    try:
        _unshare_network()
    except OSError:
        if user is not None:
            raise
    if user is None:
        return
    os.setgroups([])
    os.setgid(user.gid)
    os.setuid(user.uid)
    if os.getuid() != user.uid or os.geteuid() != user.uid or os.getgid() != user.gid:
        raise RuntimeError(f"the task subprocess did not become {user.name}")
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise RuntimeError(f"the task subprocess could become root again after becoming {user.name}")


def _unshare_network() -> None:
    """A new network namespace for this process (os.unshare exists from Python 3.12)."""
    if hasattr(os, "unshare"):
        os.unshare(CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"unshare(CLONE_NEWNET): {os.strerror(errno)}")


def readable_copy(source: Path, target: Path, user: TaskUser) -> None:
    """Copies ``source`` to ``target`` (the daemon reads it), for ``user`` alone to read."""
    with open(source, "rb") as reading, open(target, "wb") as writing:
        os.fchmod(writing.fileno(), 0o400)
        os.fchown(writing.fileno(), user.uid, user.gid)
        shutil.copyfileobj(reading, writing, 1 << 20)
