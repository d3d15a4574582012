"""The one rerun rule: a worker never lets the same input of its be summed twice over different
sets of peers, so no restart, retry or hostile coordinator can difference two sums.

Each step of a task (an analytics step, a learning round) is one input. The worker records,
before it sends, which workers it masks that input with and, before it helps unmask, which
workers' inputs the sum covers; a later request for the same step with another set is refused.
The same set again (a resend, a retried phase) is allowed: it reveals nothing new. The record
is a SQLite file, so a restarted worker keeps it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Collection
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS contributions (
    task TEXT NOT NULL,   -- the task's key: its signature's nonce, or its spec's digest
    step TEXT NOT NULL,   -- "step 2", "round 3"
    kind TEXT NOT NULL,   -- "masked with" or "summed with"
    peers TEXT NOT NULL,  -- the workers' names, sorted, one per line
    PRIMARY KEY (task, step, kind)
);
"""


class RerunRefused(Exception):
    """The step was already contributed over another set of peers; the message says which."""


class ContributionLedger:
    """What this worker contributed, to which peers, per task and step."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def record(self, task: str, step: str, kind: str, peers: Collection[str]) -> None:
        """Records that this step's input is `kind` `peers`; RerunRefused if it already was
        with another set."""
        listed = "\n".join(sorted(set(peers)))
        with self._lock:
            row = self._db.execute(
                "SELECT peers FROM contributions WHERE task = ? AND step = ? AND kind = ?",
                (task, step, kind)).fetchone()
            if row is None:
                self._db.execute("INSERT INTO contributions VALUES (?, ?, ?, ?)",
                                 (task, step, kind, listed))
            elif row[0] != listed:
                before = ", ".join(row[0].split("\n"))
                now = ", ".join(listed.split("\n"))
                raise RerunRefused(
                    f"{step} of this task was already {kind} {before}; the same input is not "
                    f"{kind} another set of workers ({now}), since the difference of the two "
                    "sums would reveal inputs")

    def close(self) -> None:
        self._db.close()
