"""What a failed write of the coordinator's state means, decided in one place.

Every write to the state dir (the database, blobs/, scratch/) runs under `Writes.guard`. A disk
that is full, read-only or failing (ENOSPC, EDQUOT, EFBIG, EROFS, EIO; SQLite's FULL, IOERR and
READONLY) raises `WriteFailed`, whose message says what could not be written and what to do,
and marks the state dir failing. Then:
- the task the write belonged to ends in ERROR with that message (`TaskManager`); an end that
  cannot be written is kept in memory by the store and written once the disk takes it;
- a call that was writing (CreateTask) answers UNAVAILABLE with it (`calls.status_of`) and
  leaves nothing behind (`Store.create_task` is one transaction);
- health answers NOT_SERVING (`server.watch_writes`) until a probe write succeeds again.
Any other error passes through unchanged.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PROBE_FILE = "write-probe"
PROBE_BYTES = 64 << 10  # written and synced: a disk with less room than this is still failing

_DISK_ERRNOS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "a file reached the size limit",
    errno.EROFS: "the file system is read-only",
    errno.EIO: "the disk reported an I/O error",
}
_SQLITE_ERRORS = {  # by the prefix of SQLite's error name (SQLITE_IOERR_WRITE, ...)
    "SQLITE_FULL": "the disk is full",
    "SQLITE_IOERR": "the disk reported an I/O error",
    "SQLITE_READONLY": "the database or its file system is read-only",
}


class WriteFailed(Exception):
    """The state dir did not take a write; the message says what and what to do."""


def _disk_fault(error: BaseException) -> str | None:
    """What went wrong with the disk, in words, if `error` is a failed write; else None."""
    if isinstance(error, OSError) and error.errno in _DISK_ERRNOS:
        return f"{_DISK_ERRNOS[error.errno]} ({errno.errorcode[error.errno]})"
    if isinstance(error, sqlite3.Error):
        name = getattr(error, "sqlite_errorname", "")
        for prefix, words in _SQLITE_ERRORS.items():
            if name.startswith(prefix):
                return f"{words} ({name})"
    return None


class Writes:
    """The state of the state dir's writes: `failing` holds the last failure's message from a
    failed write until `probe` succeeds."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.failing: str | None = None

    @contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Runs a write of `what`; WriteFailed if the disk failed it."""
        try:
            yield
        except (OSError, sqlite3.Error) as error:
            fault = _disk_fault(error)
            if fault is None:
                raise
            self.failing = (f"the coordinator could not write {what} to its state dir "
                            f"{self.state_dir}: {fault}; free space there or make it writable")
            raise WriteFailed(self.failing) from None

    def probe(self) -> bool:
        """Whether a write of PROBE_BYTES to the state dir succeeds now."""
        path = self.state_dir / PROBE_FILE
        try:
            with open(path, "wb") as handle:
                handle.write(bytes(PROBE_BYTES))
                handle.flush()
                os.fsync(handle.fileno())
            return True
        except OSError:
            return False
        finally:
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass
