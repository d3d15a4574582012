"""The coordinator's durable state: tasks, their logs and results, in SQLite under the state dir.

Large blobs (built tasks, results) are files beside the database. Everything is written before
the call that caused it returns, so a coordinator killed at any moment restarts knowing every task.

One coordinator owns a state dir at a time: a Store takes an exclusive lock on it before it
reads or writes anything there. Results and checkpoints carry a checksum (their length and
CRC-32, in the database) that every read checks: a blob corrupted on disk is `DataLoss`, never
decoded. A database SQLite cannot read stops the coordinator at its start (`StateError`).
Every write runs under `writes.Writes.guard`, which decides what a failed one means: a task's
end that the disk did not take is kept here, in memory, and seen by every read of the task,
until `retry_writes` writes it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from sdk.proto import services_pb2 as pb
from coordinator.writes import WriteFailed, Writes
from sdk.proto import task_pb2

ENDED = {pb.TASK_STATE_FINISHED, pb.TASK_STATE_ERROR, pb.TASK_STATE_CANCELLED}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    kind INTEGER NOT NULL,
    state INTEGER NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    finished_at REAL NOT NULL DEFAULT 0,
    summary BLOB NOT NULL  -- the spec without code or graph: name, kind, rules, datasets
);
CREATE TABLE IF NOT EXISTS metrics (
    task_id INTEGER NOT NULL,
    round INTEGER NOT NULL,
    workers INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (task_id, round, name)
);
CREATE TABLE IF NOT EXISTS logs (
    task_id INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    time REAL NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (task_id, offset)
);
"""

# Schema changes after the first, each run once and in order; PRAGMA user_version counts them.
_MIGRATIONS = [
    """
    ALTER TABLE tasks ADD COLUMN owner TEXT NOT NULL DEFAULT 'anonymous';
    CREATE INDEX tasks_by_owner ON tasks (owner, id);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time REAL NOT NULL,
        caller TEXT NOT NULL,
        role TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    """,
    """
    ALTER TABLE tasks ADD COLUMN workers TEXT NOT NULL DEFAULT '[]';
    """,
    """
    CREATE TABLE checksums (  -- of result and checkpoint files in blobs/, by file name
        name TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        crc32 INTEGER NOT NULL
    );
    """,
    """
    CREATE TABLE checkpoints (  -- the round each checkpoint file in blobs/ holds, by file name
        name TEXT PRIMARY KEY,
        round INTEGER NOT NULL
    );
    """,
]

LOCK_FILE = "coordinator.lock"  # holds the owning coordinator's pid
DATABASE_FILE = "coordinator.sqlite3"


class StateError(Exception):
    """The state dir cannot be used: another coordinator owns it, or its database is corrupted.
    The message says what to do."""


class DataLoss(Exception):
    """A result or checkpoint on disk does not match its checksum."""


class Checksum:
    """The length and CRC-32 of a blob's bytes, fed as they are written or read: enough to tell
    a file that changed on disk (a flipped bit, a cut or a torn write) from the one written."""

    def __init__(self, size: int = 0, crc32: int = 0) -> None:
        self.size, self.crc32 = size, crc32

    def update(self, data: bytes | memoryview) -> None:
        self.crc32 = zlib.crc32(data, self.crc32)
        self.size += len(data)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Checksum)
                and (self.size, self.crc32) == (other.size, other.crc32))


_COLUMNS = "id, name, kind, state, error, created_at, finished_at, summary, owner"


@dataclass(frozen=True)
class TaskRecord:
    id: int
    name: str
    kind: int
    state: int
    error: str
    created_at: float
    finished_at: float
    summary: bytes
    owner: str

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @property
    def state_name(self) -> str:
        return pb.TaskState.Name(self.state).removeprefix("TASK_STATE_")


class Store:
    """SQLite tables for tasks and logs, and a blob folder for specs and results.

    StateError when another coordinator owns `state_dir` (nothing in it is touched then) or its
    database is corrupted."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self._lock = _lock(state_dir)
        try:
            self._db = _open_database(state_dir / DATABASE_FILE)
        except BaseException:
            os.close(self._lock)
            raise
        self.writes = Writes(state_dir)
        self._unwritten: dict[int, tuple[int, str, float]] = {}  # ends the disk did not take
        self.blobs = state_dir / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.scratch = state_dir / "scratch"  # tasks being created; emptied at every start
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.scratch.mkdir()

    def close(self) -> None:
        self._db.close()
        os.close(self._lock)  # and with it the lock

    # Tasks ------------------------------------------------------------------------------------

    def create_task(self, spec: task_pb2.TaskSpec, spec_bytes: bytes, owner: str,
                    signature: task_pb2.TaskSignature | None = None,
                    weights: tuple[Path, Checksum] | None = None,
                    first_log: Callable[[int], str] | None = None) -> int:
        """Records a new task of `owner`, with `first_log(task_id)` as its log's first line;
        `weights`, a file in scratch and the checksum of what was written to it, becomes its
        initial weights; `signature`, its submitter's, goes to its workers with the spec.
        All or nothing: WriteFailed leaves neither a row nor a file of the task behind."""
        summary = task_pb2.TaskSpec(name=spec.name, kind=spec.kind, rules=spec.rules,
                                    datasets=spec.datasets).SerializeToString()
        task_id = None
        try:
            with self.writes.guard("a new task"):
                self._db.execute("BEGIN IMMEDIATE")
                cursor = self._db.execute(
                    "INSERT INTO tasks (name, kind, state, created_at, summary, owner) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (spec.name, spec.kind, pb.TASK_STATE_PENDING, time.time(), summary, owner),
                )
                task_id = int(cursor.lastrowid)
                self._write_blob(f"task-{task_id}.spec", spec_bytes)
                if signature is not None:
                    self._write_blob(f"task-{task_id}.sig", signature.SerializeToString())
                if weights is not None:
                    written, checksum = weights
                    first = self._weights_file(task_id, 0)
                    written.replace(first)
                    self._checkpoint(task_id, first, checksum, 0)
                if first_log is not None:
                    self._insert_log(task_id, first_log(task_id))
                self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            if task_id is not None:
                for path in self.blobs.glob(f"task-{task_id}.*"):
                    path.unlink(missing_ok=True)
            raise
        return task_id

    def get_task(self, task_id: int) -> TaskRecord | None:
        if not 0 <= task_id < 2**63:  # beyond SQLite's integers: no such task
            return None
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM tasks WHERE id = ?",
            (task_id,),
        ).fetchone()
        return self._record(row) if row else None

    def list_tasks(self, limit: int, before: int = 0, owner: str | None = None) -> list[TaskRecord]:
        """The newest `limit` tasks older than task `before` (0: any), of `owner` only if given."""
        before = min(before, 2**63 - 1)
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM tasks WHERE (? = 0 OR id < ?) AND (? IS NULL OR owner = ?) "
            "ORDER BY id DESC LIMIT ?",
            (before, before, owner, owner, limit),
        ).fetchall()
        return [self._record(row) for row in rows]

    def set_state(self, task_id: int, state: int, error: str = "") -> None:
        """Records the task's state; an end (FINISHED, ERROR, CANCELLED) that the disk does not
        take is kept in memory, seen by reads, until `retry_writes` writes it; WriteFailed for
        any other state."""
        finished_at = time.time() if state in ENDED else 0.0
        try:
            self._write_state(task_id, state, error, finished_at)
        except WriteFailed:
            if state not in ENDED:
                raise
            self._unwritten[task_id] = (state, error, finished_at)

    def retry_writes(self) -> bool:
        """Whether the state dir takes writes again (a probe write succeeds); if so, the task
        ends kept in memory are written and the failure is over."""
        if not self.writes.probe():
            return False
        try:
            for task_id, (state, error, finished_at) in list(self._unwritten.items()):
                self._write_state(task_id, state, error, finished_at)
                del self._unwritten[task_id]
        except WriteFailed:
            return False
        self.writes.failing = None
        return True

    def _write_state(self, task_id: int, state: int, error: str, finished_at: float) -> None:
        with self.writes.guard(f"the state of task {task_id}"):
            self._db.execute(
                "UPDATE tasks SET state = ?, error = ?, finished_at = ? WHERE id = ?",
                (state, error, finished_at, task_id),
            )

    def _record(self, row: tuple) -> TaskRecord:
        """The task of a row, with its end if that is not written yet."""
        record = TaskRecord(*row)
        if record.id in self._unwritten:
            state, error, finished_at = self._unwritten[record.id]
            record = replace(record, state=state, error=error, finished_at=finished_at)
        return record

    def set_workers(self, task_id: int, names: list[str]) -> None:
        """Records the task's workers: whose rows an analytics result covers, or those that
        stayed to a learning task's end."""
        with self.writes.guard(f"the workers of task {task_id}"):
            self._db.execute("UPDATE tasks SET workers = ? WHERE id = ?",
                             (json.dumps(names), task_id))

    def task_workers(self, task_id: int) -> list[str]:
        """The workers recorded by `set_workers` ([] if none were)."""
        row = self._db.execute("SELECT workers FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return json.loads(row[0]) if row else []

    def count_by_state(self) -> dict[int, int]:
        """How many tasks are in each state (states without any left out)."""
        return dict(self._db.execute("SELECT state, COUNT(*) FROM tasks GROUP BY state"))

    def unfinished_tasks(self) -> list[TaskRecord]:
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM tasks WHERE state IN (?, ?) ORDER BY id",
            (pb.TASK_STATE_PENDING, pb.TASK_STATE_RUNNING),
        ).fetchall()
        return [TaskRecord(*row) for row in rows]

    def count_unfinished(self, owner: str) -> int:
        """How many tasks of `owner` are pending or running."""
        row = self._db.execute(
            "SELECT COUNT(*) FROM tasks WHERE owner = ? AND state IN (?, ?)",
            (owner, pb.TASK_STATE_PENDING, pb.TASK_STATE_RUNNING),
        ).fetchone()
        return int(row[0])

    def load_spec(self, task_id: int) -> bytes:
        return (self.blobs / f"task-{task_id}.spec").read_bytes()

    def load_signature(self, task_id: int) -> task_pb2.TaskSignature | None:
        """The submitter's signature of the task; None for a task created without identities."""
        try:
            data = (self.blobs / f"task-{task_id}.sig").read_bytes()
        except FileNotFoundError:
            return None
        return task_pb2.TaskSignature.FromString(data)

    # Audit ------------------------------------------------------------------------------------

    def append_audit(self, caller: str, role: str, action: str, target: str, outcome: str,
                     detail: str) -> None:
        with self.writes.guard("the audit log"):
            self._db.execute(
                "INSERT INTO audit (time, caller, role, action, target, outcome, detail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (time.time(), caller, role, action, target, outcome, detail),
            )

    def list_audit(self, limit: int, before: int = 0) -> list[pb.AuditEntry]:
        """The newest `limit` audit entries older than entry `before` (0: any)."""
        before = min(before, 2**63 - 1)
        rows = self._db.execute(
            "SELECT id, time, caller, role, action, target, outcome, detail FROM audit "
            "WHERE (? = 0 OR id < ?) ORDER BY id DESC LIMIT ?",
            (before, before, limit),
        ).fetchall()
        return [pb.AuditEntry(id=i, time=t, caller=c, role=r, action=a, target=g, outcome=o,
                              detail=d) for i, t, c, r, a, g, o, d in rows]

    # Logs -------------------------------------------------------------------------------------

    def append_log(self, task_id: int, message: str) -> pb.LogEntry:
        with self.writes.guard(f"the log of task {task_id}"):
            return self._insert_log(task_id, message)

    def _insert_log(self, task_id: int, message: str) -> pb.LogEntry:
        now = time.time()
        offset = self.log_length(task_id)
        self._db.execute(
            "INSERT INTO logs (task_id, offset, time, message) VALUES (?, ?, ?, ?)",
            (task_id, offset, now, message),
        )
        return pb.LogEntry(offset=offset, time=now, message=message)

    def log_length(self, task_id: int) -> int:
        row = self._db.execute("SELECT COUNT(*) FROM logs WHERE task_id = ?", (task_id,)).fetchone()
        return int(row[0])

    def read_logs(self, task_id: int, offset: int, limit: int = 1000,
                  max_chars: int = 1 << 20) -> list[pb.LogEntry]:
        """Entries from `offset` on: at most `limit`, and no more after `max_chars` characters
        of messages (always one at least)."""
        rows = self._db.execute(
            "SELECT offset, time, message FROM logs WHERE task_id = ? AND offset >= ? "
            "ORDER BY offset LIMIT ?",
            (task_id, offset, limit),
        )
        entries, chars = [], 0
        for o, t, m in rows:
            entries.append(pb.LogEntry(offset=o, time=t, message=m))
            chars += len(m)
            if chars >= max_chars:
                break
        rows.close()
        return entries

    # Learning ---------------------------------------------------------------------------------

    def weights_path(self, task_id: int) -> Path:
        """The task's global weights: the initial ones, then the checkpoint of the last round.

        It is a link to one of two files that checkpoints take turns to overwrite in place
        (rewriting pages the page cache holds is much cheaper than a new file each round): a
        download still open two checkpoints later would read a mix, which only a worker that
        left the round can be doing."""
        return self.blobs / f"task-{task_id}.weights"

    def spare_weights_path(self, task_id: int) -> Path:
        """The file to write the task's next checkpoint into: not the current one."""
        current = os.readlink(self.weights_path(task_id))
        return self._weights_file(task_id, 1 if current.endswith(".0") else 0)

    def checkpoint(self, task_id: int, written: Path, checksum: Checksum,
                   round_number: int) -> None:
        """Makes `written` (the spare file, whose bytes have `checksum`: the average of round
        `round_number`) the task's global weights, atomically."""
        with self.writes.guard(f"the checkpoint of task {task_id}"):
            self._checkpoint(task_id, written, checksum, round_number)

    def checkpoint_round(self, task_id: int) -> int:
        """The round whose average the task's global weights are (0: the initial weights)."""
        name = os.readlink(self.weights_path(task_id))
        row = self._db.execute("SELECT round FROM checkpoints WHERE name = ?",
                               (name,)).fetchone()
        return row[0] if row else 0

    def _checkpoint(self, task_id: int, written: Path, checksum: Checksum,
                    round_number: int) -> None:
        # The file's checksum and round first: the link, swapped last, is what makes it current.
        self._keep_checksum(written.name, checksum)
        self._db.execute("INSERT OR REPLACE INTO checkpoints (name, round) VALUES (?, ?)",
                         (written.name, round_number))
        link = self.blobs / f"task-{task_id}.weights.link"
        link.unlink(missing_ok=True)
        link.symlink_to(written.name)
        link.replace(self.weights_path(task_id))

    def weights_chunks(self, task_id: int, size: int) -> Iterator[bytes]:
        """The task's global weights in chunks of `size` bytes, checked against their checksum
        (DataLoss at the end, before the last chunk); FileNotFoundError without weights."""
        current = self.blobs / os.readlink(self.weights_path(task_id))
        return self._checked_chunks(current, f"the checkpoint of task {task_id}", size)

    def drop_spare_weights(self, task_id: int) -> None:
        """Deletes the spare checkpoint file of a task whose rounds are over."""
        self.spare_weights_path(task_id).unlink(missing_ok=True)

    def _weights_file(self, task_id: int, slot: int) -> Path:
        return self.blobs / f"task-{task_id}.weights.{slot}"

    def save_metrics(self, task_id: int, round_number: int, workers: int,
                     metrics: dict[str, float]) -> None:
        with self.writes.guard(f"the metrics of task {task_id}"):
            self._db.executemany(
                "INSERT OR REPLACE INTO metrics (task_id, round, workers, name, value) "
                "VALUES (?, ?, ?, ?, ?)",
                [(task_id, round_number, workers, k, v) for k, v in metrics.items()],
            )

    def load_metrics(self, task_id: int) -> list[tuple[int, int, dict[str, float]]]:
        """(round, workers, metrics) for every round that validated, in order."""
        rounds: dict[int, tuple[int, dict[str, float]]] = {}
        for number, workers, name, value in self._db.execute(
                "SELECT round, workers, name, value FROM metrics WHERE task_id = ? "
                "ORDER BY round, name", (task_id,)):
            rounds.setdefault(number, (workers, {}))[1][name] = value
        return [(number, workers, metrics) for number, (workers, metrics) in rounds.items()]

    # Results ----------------------------------------------------------------------------------

    def result_path(self, task_id: int) -> Path:
        return self.blobs / f"task-{task_id}.result"

    def keep_weights_as_result(self, task_id: int) -> None:
        """The global weights, as they are now, become the task's result."""
        with self.writes.guard(f"the result of task {task_id}"):
            self._keep_weights_as_result(task_id)

    def _keep_weights_as_result(self, task_id: int) -> None:
        current = self.weights_path(task_id).resolve()
        partial = self.blobs / f"task-{task_id}.result.partial"
        partial.unlink(missing_ok=True)
        try:
            os.link(current, partial)
        except OSError:
            shutil.copyfile(current, partial)
        checksum = self._checksum(current.name)
        if checksum is not None:
            self._keep_checksum(self.result_path(task_id).name, checksum)
        partial.replace(self.result_path(task_id))

    def save_result(self, task_id: int, data: bytes) -> None:
        checksum = Checksum()
        checksum.update(data)
        with self.writes.guard(f"the result of task {task_id}"):
            self._keep_checksum(self.result_path(task_id).name, checksum)
            self._write_blob(self.result_path(task_id).name, data)

    def result_chunks(self, task_id: int, size: int) -> Iterator[bytes]:
        """The task's result in chunks of `size` bytes, checked against its checksum (DataLoss
        at the end, before the last chunk)."""
        return self._checked_chunks(self.result_path(task_id), f"the result of task {task_id}",
                                    size)

    def _checked_chunks(self, path: Path, what: str, size: int) -> Iterator[bytes]:
        """`path` (opened now: FileNotFoundError now) in chunks, which may be read in another
        thread; the last one is held back until the whole file is found to match its checksum
        (when it has one: files kept before checksums were are read unchecked), so a corrupted
        file never reaches a reader whole."""
        return _checked(open(path, "rb"), self._checksum(path.name), what, size)

    def _checksum(self, name: str) -> Checksum | None:
        row = self._db.execute("SELECT size, crc32 FROM checksums WHERE name = ?",
                               (name,)).fetchone()
        return Checksum(*row) if row else None

    def _keep_checksum(self, name: str, checksum: Checksum) -> None:
        self._db.execute("INSERT OR REPLACE INTO checksums (name, size, crc32) VALUES (?, ?, ?)",
                         (name, checksum.size, checksum.crc32))

    def _write_blob(self, name: str, data: bytes) -> None:
        """Writes a blob atomically: a reader never sees half of it."""
        partial = self.blobs / (name + ".partial")
        with open(partial, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        partial.replace(self.blobs / name)


def _checked(handle: BinaryIO, expected: Checksum | None, what: str,
             size: int) -> Iterator[bytes]:
    """The chunks of Store._checked_chunks."""
    with handle:
        if expected is not None and os.fstat(handle.fileno()).st_size != expected.size:
            raise DataLoss(f"{what} is corrupted on disk (its length changed)")
        seen = Checksum()
        chunk = handle.read(size)
        while chunk:
            seen.update(chunk)
            following = handle.read(size)
            if not following and expected is not None and seen != expected:
                raise DataLoss(f"{what} is corrupted on disk (its checksum differs)")
            yield chunk
            chunk = following


def _lock(state_dir: Path) -> int:
    """Takes the state dir's lock, writing this process's pid into it, and returns its open
    file (which holds the lock until closed or the process ends); StateError naming the pid of
    the coordinator that holds it."""
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StateError(f"the state dir {state_dir} is in use by another coordinator (pid "
                         f"{holder}): stop that one first, or give this one its own "
                         "--state-dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


_CORRUPT = {"SQLITE_CORRUPT", "SQLITE_NOTADB"}  # what SQLite calls a damaged file


def _open_database(path: Path) -> sqlite3.Connection:
    """The database at `path`, checked (PRAGMA quick_check) and brought to the newest schema;
    StateError saying what to do if SQLite finds it corrupted."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        problems = [row[0] for row in db.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise sqlite3.DatabaseError("; ".join(problems[:3]))
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        version = db.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
            db.executescript(f"BEGIN; {script} PRAGMA user_version = {number}; COMMIT;")
    except sqlite3.DatabaseError as error:
        db.close()
        if getattr(error, "sqlite_errorname", "SQLITE_CORRUPT") not in _CORRUPT:
            raise StateError(f"cannot use the coordinator's database {path}: {error}") from None
        raise StateError(f"the coordinator's database {path} is corrupted ({error}): restore "
                         "the state dir from a backup, or move the database away (with its "
                         "-wal and -shm files) to start afresh without the tasks it knew"
                         ) from None
    return db
