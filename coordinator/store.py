"""The coordinator's durable state: tasks, their logs and results, in SQLite under the state dir.

Large blobs (built tasks, results) are files beside the database. Everything is written before
the call that caused it returns, so a coordinator killed at any moment restarts knowing every task.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from sdk.proto import services_pb2 as pb
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
]

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
    """SQLite tables for tasks and logs, and a blob folder for specs and results."""

    def __init__(self, state_dir: Path) -> None:
        self.blobs = state_dir / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.scratch = state_dir / "scratch"  # tasks being created; emptied at every start
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.scratch.mkdir()
        self._db = sqlite3.connect(state_dir / "coordinator.sqlite3", isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._migrate()

    def close(self) -> None:
        self._db.close()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
            self._db.executescript(f"BEGIN; {script} PRAGMA user_version = {number}; COMMIT;")

    # Tasks ------------------------------------------------------------------------------------

    def create_task(self, spec: task_pb2.TaskSpec, spec_bytes: bytes, owner: str,
                    signature: task_pb2.TaskSignature | None = None,
                    weights: Path | None = None) -> int:
        """Records a new task of `owner`; `weights`, a file in scratch, becomes its initial
        weights; `signature`, its submitter's, goes to its workers with the spec."""
        summary = task_pb2.TaskSpec(name=spec.name, kind=spec.kind, rules=spec.rules,
                                    datasets=spec.datasets).SerializeToString()
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
            first = self._weights_file(task_id, 0)
            weights.replace(first)
            self.checkpoint(task_id, first)
        return task_id

    def get_task(self, task_id: int) -> TaskRecord | None:
        if not 0 <= task_id < 2**63:  # beyond SQLite's integers: no such task
            return None
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM tasks WHERE id = ?",
            (task_id,),
        ).fetchone()
        return TaskRecord(*row) if row else None

    def list_tasks(self, limit: int, before: int = 0, owner: str | None = None) -> list[TaskRecord]:
        """The newest `limit` tasks older than task `before` (0: any), of `owner` only if given."""
        before = min(before, 2**63 - 1)
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM tasks WHERE (? = 0 OR id < ?) AND (? IS NULL OR owner = ?) "
            "ORDER BY id DESC LIMIT ?",
            (before, before, owner, owner, limit),
        ).fetchall()
        return [TaskRecord(*row) for row in rows]

    def set_state(self, task_id: int, state: int, error: str = "") -> None:
        finished_at = time.time() if state in ENDED else 0.0
        self._db.execute(
            "UPDATE tasks SET state = ?, error = ?, finished_at = ? WHERE id = ?",
            (state, error, finished_at, task_id),
        )

    def set_workers(self, task_id: int, names: list[str]) -> None:
        """Records the workers that stayed to the task's end."""
        self._db.execute("UPDATE tasks SET workers = ? WHERE id = ?", (json.dumps(names), task_id))

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

    def checkpoint(self, task_id: int, written: Path) -> None:
        """Makes `written` (the spare file) the task's global weights, atomically."""
        link = self.blobs / f"task-{task_id}.weights.link"
        link.unlink(missing_ok=True)
        link.symlink_to(written.name)
        link.replace(self.weights_path(task_id))

    def drop_spare_weights(self, task_id: int) -> None:
        """Deletes the spare checkpoint file of a task whose rounds are over."""
        self.spare_weights_path(task_id).unlink(missing_ok=True)

    def _weights_file(self, task_id: int, slot: int) -> Path:
        return self.blobs / f"task-{task_id}.weights.{slot}"

    def save_metrics(self, task_id: int, round_number: int, workers: int,
                     metrics: dict[str, float]) -> None:
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
        partial = self.blobs / f"task-{task_id}.result.partial"
        partial.unlink(missing_ok=True)
        try:
            os.link(self.weights_path(task_id).resolve(), partial)
        except OSError:
            shutil.copyfile(self.weights_path(task_id), partial)
        partial.replace(self.result_path(task_id))

    def save_result(self, task_id: int, data: bytes) -> None:
        self._write_blob(f"task-{task_id}.result", data)

    def load_result(self, task_id: int) -> bytes:
        return self.result_path(task_id).read_bytes()

    def _write_blob(self, name: str, data: bytes) -> None:
        """Writes a blob atomically: a reader never sees half of it."""
        partial = self.blobs / (name + ".partial")
        with open(partial, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        partial.replace(self.blobs / name)
