"""The worker's own SQLite records (the rerun rule's, the privacy ledger), opened one way."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_records(path: Path, schema: str) -> sqlite3.Connection:
    """The database at `path` (its folder made if missing) with `schema` applied: autocommit,
    write-ahead logged, usable from the daemon's threads (each caller keeps its own lock)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(schema)
    return db
