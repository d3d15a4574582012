"""The privacy budgets this holder keeps: what each user has spent on each of its data sources.

A site whose policy has a [privacy] table keeps a ledger, a SQLite file in the worker's
`--state-dir` (a persistent folder, unlike the work dir), of every release of noise it made:
who asked, on which data source, for which task and step, and what it cost in zCDP. A source
is keyed by the data underneath (a file's device and inode, a database's table: `Table.key()`
of worker.sources), so a second name or a hard link for the same rows spends the same budget. Before a task computes anything the worker checks that
its whole cost fits both the user's budget and the budget of all users together; every release
is checked again and recorded before it leaves, in one transaction, so two tasks at once cannot
overspend, and a release asked for twice (a retried step) is paid twice.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sdk.privacy.accounting import Cost, epsilon
from worker.records import open_records

_SCHEMA = """
CREATE TABLE IF NOT EXISTS releases (
    user TEXT NOT NULL,    -- who asked: the task's signer
    source TEXT NOT NULL,  -- the data source: "file:DEVICE:INODE"
    task TEXT NOT NULL,    -- the task's key (its signature's nonce), hex
    step TEXT NOT NULL,    -- "step 2", "round 3"
    rho REAL NOT NULL,     -- zCDP cost: Renyi DP of order alpha at most xi + rho * alpha
    xi REAL NOT NULL,
    at REAL NOT NULL       -- unix seconds
);
CREATE INDEX IF NOT EXISTS releases_by_source ON releases (source, user);
"""


class BudgetExceeded(Exception):
    """A task or release would spend more than a budget allows; the message says which budget,
    naming no other user."""


@dataclass(frozen=True)
class Budgets:
    """The [privacy] table of a site policy."""

    require_differential_privacy: bool = False
    epsilon_per_user: float = 10.0  # per user per data source, over the ledger's lifetime
    delta_per_user: float = 1e-5
    epsilon_total: float = 50.0  # per data source, all users together
    delta_total: float = 1e-4


class PrivacyLedger:
    """What each user spent on each data source, kept across restarts."""

    def __init__(self, path: Path) -> None:
        self._db = open_records(path, _SCHEMA)
        self._lock = threading.Lock()

    def spent(self, source: str, user: str | None = None, besides: str = "") -> Cost:
        """What `user` (everyone with None) spent on `source`, leaving out task `besides`'s
        releases; zCDP costs add up."""
        query = ("SELECT COALESCE(SUM(rho), 0), COALESCE(SUM(xi), 0) FROM releases "
                 "WHERE source = ? AND task != ?")
        rho, xi = self._db.execute(query + (" AND user = ?" if user is not None else ""),
                                   (source, besides, *([user] if user is not None else []))
                                   ).fetchone()
        return Cost(rho, xi)

    def check(self, user: str, sources: dict[str, str], cost: Cost, budgets: Budgets,
              task: str) -> None:
        """BudgetExceeded unless `cost`, task `task`'s whole cost, fits `user`'s budget and
        everyone's on each source (`sources`: key -> the name the task gave it) besides what
        the task itself spent already (before a coordinator restart, which resumes it)."""
        with self._lock:
            self._check(user, sources, cost, budgets, task)

    def spend(self, user: str, sources: dict[str, str], task: str, step: str, cost: Cost,
              budgets: Budgets | None) -> None:
        """Records a release of `cost` on every source, after checking it fits the budgets
        (None: a site that sets none, where releases are still recorded)."""
        with self._lock:
            if budgets is not None:
                self._check(user, sources, cost, budgets)
            now = time.time()
            self._db.executemany(
                "INSERT INTO releases VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(user, key, task, step, cost.rho, cost.xi, now) for key in sources])

    def remaining(self, user: str, source: str, budgets: Budgets) -> float:
        """The epsilon `user` has left on `source` (at the policy's delta_per_user)."""
        used = epsilon(self.spent(source, user), budgets.delta_per_user)
        return max(budgets.epsilon_per_user - used, 0.0)

    def _check(self, user: str, sources: dict[str, str], cost: Cost, budgets: Budgets,
               besides: str = "") -> None:
        for key, name in sources.items():
            mine = epsilon(self.spent(key, user, besides) + cost, budgets.delta_per_user)
            if mine > budgets.epsilon_per_user:
                already = epsilon(self.spent(key, user, besides), budgets.delta_per_user)
                raise BudgetExceeded(
                    f"{user} would spend epsilon {mine:.3g} in all on {name!r} here (delta "
                    f"{budgets.delta_per_user:g}), over this site's epsilon_per_user="
                    f"{budgets.epsilon_per_user:g}: {already:.3g} is spent already "
                    "([privacy] epsilon_per_user)")
            everyone = epsilon(self.spent(key, None, besides) + cost, budgets.delta_total)
            if everyone > budgets.epsilon_total:
                raise BudgetExceeded(
                    f"the task would take what all users together have spent on {name!r} "
                    f"here past this site's epsilon_total={budgets.epsilon_total:g} (delta "
                    f"{budgets.delta_total:g}) ([privacy] epsilon_total)")

    def close(self) -> None:
        self._db.close()

