"""The one rerun rule: a worker never lets the same input of its be summed twice over different
sets of peers, so no restart, retry or hostile coordinator can difference two sums.

Each step of a task (an analytics step, a learning round) is one input. The worker records,
before it sends, which workers it masks that input with and, before it helps unmask, which
workers' inputs the sum covers; a later request for the same step with another set is refused.
The same set again (a resend, a retried phase) is allowed: it reveals nothing new. A learning
task's rounds only go forward, up to the signed `max_rounds`, so renumbering a round cannot make
a fresh step of it. The record is a SQLite file, so a restarted worker keeps it.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from pathlib import Path

from worker.records import open_records

_SCHEMA = """
CREATE TABLE IF NOT EXISTS contributions (
    task TEXT NOT NULL,   -- the task's key: its signature's nonce, or its spec's digest
    step TEXT NOT NULL,   -- "step 2", "round 3"
    kind TEXT NOT NULL,   -- "masked with" or "summed with"
    peers TEXT NOT NULL,  -- the workers' names, sorted, one per line
    PRIMARY KEY (task, step, kind)
);
CREATE TABLE IF NOT EXISTS rounds (
    task TEXT PRIMARY KEY,
    latest INTEGER NOT NULL  -- the latest learning round this worker trained for the task
);
"""


class RerunRefused(Exception):
    """The step was already contributed over another set of peers; the message says which."""


class ContributionLedger:
    """What this worker contributed, to which peers, per task and step."""

    def __init__(self, path: Path) -> None:
        self._db = open_records(path, _SCHEMA)
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

    def advance(self, task: str, round_number: int, max_rounds: int) -> None:
        """Records that this worker trains `round_number` of a learning task; RerunRefused if
        it is past the task's signed `max_rounds` or before a round it already trained (the
        same round again is a retry, and the peer sets decide it)."""
        if not 1 <= round_number <= max_rounds:
            raise RerunRefused(f"round {round_number} is not one of the task's rounds (its "
                               f"submitter signed max_rounds={max_rounds})")
        with self._lock:
            row = self._db.execute("SELECT latest FROM rounds WHERE task = ?",
                                   (task,)).fetchone()
            if row is not None and round_number < row[0]:
                raise RerunRefused(f"round {round_number} comes after round {row[0]}, which "
                                   "this worker already trained: rounds only go forward")
            self._db.execute("INSERT OR REPLACE INTO rounds VALUES (?, ?)",
                             (task, max(round_number, row[0] if row else 0)))

    def close(self) -> None:
        self._db.close()
