"""The site policy: what this data holder allows, and to whom, in one place.

It is a TOML file the holder writes (`deltaflow worker --write-policy FILE` writes the template
below); the daemon reads it at start and again whenever it changes, keeping the last good one
when a new version does not parse. `PolicyFile.current` is the policy in force; `Policy.check`
decides, before anything of a task is read or run, whether this worker takes part in it.
"""

from __future__ import annotations

import fnmatch
import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdk.config import file_stamp
from sdk.privacy import asks_for_privacy
from sdk.proto import task_pb2
from sdk.secagg.rule import DEFAULT_FRACTION, check_fraction
from sdk.trust import Identity
from worker.budget import Budgets
from worker.order import DEFAULT_MAX_ORDER_PROBES, probes_of

log = logging.getLogger("deltaflow.worker")

TEMPLATE = """\
# deltaflow site policy: what this data holder allows, and to whom. The worker daemon reads it
# at start (deltaflow worker --policy FILE) and again whenever it changes; a version that does
# not parse is refused, and the last good one stays in force. Users are named by their kit's
# name ("alice"), by role ("role:analyst", "role:admin"), or "*" for every user of the
# federation ("anonymous" is every caller of a worker started with --insecure).

[analytics]
# Who may run analytics (a graph of pandas operations, never code) on this holder's data.
users = ["role:analyst"]
# The smallest set of this holder's rows an aggregate may cover: a group, a filtered set or a
# cell with fewer rows counts as empty, exactly like no rows at all.
min_rows = 3
# Refuse tasks that switch secure aggregation off (the coordinator would see this holder's sums).
require_secure_aggregation = true
# Refuse secure tasks (analytics and learning) whose secagg_threshold f is lower: t = floor(f x n)
# + 1 of a round's n share holders (under SecAgg+, of a neighbourhood of k + 1) rebuild a
# worker's masks, so a coordinator lying about who dropped needs 2t - n of them colluding to
# unmask this holder's input (0.5: a majority, 1 or 2). Plain tasks are refused only by
# require_secure_aggregation above.
min_secagg_threshold = 0.5
# Min, max, median and quantiles are single rows' values: released only if this is true (or
# under differential privacy, by a noisy search). Each is found by bisection on counts of this
# holder's values below thresholds the coordinator picks, one path down a tree per statistic.
reveal_order_statistics = false
# The most thresholds a task may count against, per column: a median takes 3,840, a min or a
# max 2,048. A task that needs more is refused; a coordinator asking for more is refused.
max_order_probes = 20000

[learning]
# Who may send code (a learning task) that runs here, in a confined subprocess; [] = nobody.
users = []
# false: the task's log gets the type of an exception in the submitter's code, not its text.
share_errors = true

[privacy]
# Differential privacy: budgets this holder keeps per data source (a file, whatever its name),
# in a ledger under the worker's --state-dir, which a [privacy] table requires. A task that
# would go past a budget is refused before it computes anything.
# Refuse tasks that do not ask for differential privacy.
require_differential_privacy = false
# What each user may spend on each data source, over the ledger's lifetime.
epsilon_per_user = 10.0
delta_per_user = 1e-5
# What all users together may spend on each data source.
epsilon_total = 50.0
delta_total = 1e-4

[datasets]
# Glob patterns of the data dir's files offered by name; nothing else is advertised or read.
offer = ["*"]
"""

_KEYS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "analytics": {"users": list, "min_rows": int, "require_secure_aggregation": bool,
                  "min_secagg_threshold": (int, float), "reveal_order_statistics": bool,
                  "max_order_probes": int},
    "learning": {"users": list, "share_errors": bool},
    "privacy": {"require_differential_privacy": bool, "epsilon_per_user": (int, float),
                "delta_per_user": (int, float), "epsilon_total": (int, float),
                "delta_total": (int, float)},
    "datasets": {"offer": list},
}


DEFAULT_MIN_ROWS = 3


class PolicyError(ValueError):
    """A policy file that cannot be used: the message says which key and why."""


class PolicyRefusal(Exception):
    """The policy does not let this worker take part in a task: the message names the rule."""


@dataclass(frozen=True)
class Policy:
    analytics_users: tuple[str, ...] = ("*",)
    min_rows: int | None = None  # None: not set by the file (--min-rows, else 3, decides)
    require_secure_aggregation: bool = False
    min_secagg_threshold: float = DEFAULT_FRACTION
    reveal_order_statistics: bool = False
    max_order_probes: int = DEFAULT_MAX_ORDER_PROBES
    learning_users: tuple[str, ...] = ()
    share_errors: bool = True
    offer: tuple[str, ...] = ("*",)
    privacy: Budgets | None = None  # the [privacy] table, if the file has one

    @classmethod
    def parse(cls, text: str) -> Policy:
        """The policy a file's text says; PolicyError naming the key that is wrong."""
        try:
            tables = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise PolicyError(f"not valid TOML: {error}") from None
        values: dict[str, Any] = {}
        for table, content in tables.items():
            if table not in _KEYS or not isinstance(content, dict):
                raise PolicyError(f"unknown table [{table}]; a policy has "
                                  f"{', '.join(f'[{t}]' for t in _KEYS)}")
            for key, value in content.items():
                expected = _KEYS[table].get(key)
                if expected is None:
                    raise PolicyError(f"[{table}] has no key {key!r}; it has "
                                      f"{', '.join(_KEYS[table])}")
                if not isinstance(value, expected) or (expected is not bool and isinstance(
                        value, bool)):
                    raise PolicyError(f"[{table}] {key} must be a {_type_name(expected)}, "
                                      f"not {value!r}")
                if expected is list and not all(isinstance(v, str) for v in value):
                    raise PolicyError(f"[{table}] {key} must be a list of strings")
                values[f"{table}.{key}"] = tuple(value) if expected is list else value
        for key in ("min_rows", "max_order_probes"):
            if values.get(f"analytics.{key}", 1) < 1:
                raise PolicyError(f"[analytics] {key} must be at least 1")
        least = values.get("analytics.min_secagg_threshold", DEFAULT_FRACTION)
        try:
            check_fraction(least)
        except ValueError as error:
            raise PolicyError(f"[analytics] min_secagg_threshold: {error}") from None
        budgets = _budgets(values) if "privacy" in tables else None
        return cls(
            analytics_users=values.get("analytics.users", ("role:analyst",)),
            min_rows=values.get("analytics.min_rows"),
            require_secure_aggregation=values.get("analytics.require_secure_aggregation", True),
            min_secagg_threshold=float(least),
            reveal_order_statistics=values.get("analytics.reveal_order_statistics", False),
            max_order_probes=values.get("analytics.max_order_probes", DEFAULT_MAX_ORDER_PROBES),
            learning_users=values.get("learning.users", ()),
            share_errors=values.get("learning.share_errors", True),
            offer=values.get("datasets.offer", ("*",)),
            privacy=budgets,
        )

    def check(self, spec: task_pb2.TaskSpec, signer: Identity) -> None:
        """PolicyRefusal unless this worker may take part in `spec`, signed by `signer`."""
        if spec.kind == task_pb2.TASK_KIND_LEARNING:
            if not _admits(self.learning_users, signer):
                raise PolicyRefusal(f"learning code from {signer.name} is not accepted by its "
                                    "policy ([learning] users)")
        elif not _admits(self.analytics_users, signer):
            raise PolicyRefusal(f"analytics from {signer.name} is not accepted by its policy "
                                "([analytics] users)")
        if self.privacy and self.privacy.require_differential_privacy and not asks_for_privacy(
                spec):
            raise PolicyRefusal("the task does not ask for differential privacy, which its "
                                "policy requires ([privacy] require_differential_privacy)")
        if self.require_secure_aggregation and not spec.secure_aggregation:
            raise PolicyRefusal("the task switches secure aggregation off, which its policy "
                                "requires ([analytics] require_secure_aggregation)")
        fraction = spec.secagg_threshold or DEFAULT_FRACTION
        if spec.secure_aggregation and not fraction >= self.min_secagg_threshold:  # NaN too
            raise PolicyRefusal(f"the task's secagg_threshold {fraction} is below its "
                                f"policy's {self.min_secagg_threshold} ([analytics] "
                                "min_secagg_threshold): fewer colluding share holders would "
                                "unmask this holder's input; submit it with secagg_threshold="
                                f"{self.min_secagg_threshold} or more")
        self._check_order_statistics(spec)
        for ref in spec.datasets:
            if not self.offers(ref.file):
                raise PolicyRefusal(f"its policy does not offer {ref.file!r} ([datasets] offer)")

    def _check_order_statistics(self, spec: task_pb2.TaskSpec) -> None:
        """PolicyRefusal for order statistics this holder does not reveal, or that need more
        thresholds than it counts against."""
        probes = probes_of(spec)
        if not probes:
            return
        if not self.reveal_order_statistics and not asks_for_privacy(spec):
            raise PolicyRefusal("the task asks for order statistics (quantile, median, min or "
                                "max: single rows' values), which its policy does not reveal "
                                "([analytics] reveal_order_statistics); ask for them under "
                                "differential privacy, or ask the holder to allow them")
        if probes > self.max_order_probes:
            raise PolicyRefusal(f"the task's order statistics need {probes} thresholds per "
                                f"column, more than its policy's {self.max_order_probes} "
                                "([analytics] max_order_probes)")

    def effective_min_rows(self, flag: int | None) -> int:
        """The smallest set of rows an aggregate may cover: the policy's, the --min-rows flag's
        where the policy sets none, the larger where both do; 3 where neither does."""
        given = [value for value in (self.min_rows, flag) if value is not None]
        return max(given) if given else DEFAULT_MIN_ROWS

    def offers(self, name: str) -> bool:
        """Whether the data dir's file `name` (a relative POSIX path) is offered."""
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.offer)


def _budgets(values: dict[str, Any]) -> Budgets:
    """The [privacy] table's budgets, defaults filled in; PolicyError for one out of range."""
    given = {key.removeprefix("privacy."): value for key, value in values.items()
             if key.startswith("privacy.")}
    budgets = Budgets(**given)
    for name in ("epsilon_per_user", "epsilon_total"):
        if not getattr(budgets, name) > 0:
            raise PolicyError(f"[privacy] {name} must be a positive number")
    for name in ("delta_per_user", "delta_total"):
        if not 0 < getattr(budgets, name) < 1:
            raise PolicyError(f"[privacy] {name} must be between 0 and 1, such as 1e-5")
    return budgets


def _type_name(expected: type | tuple[type, ...]) -> str:
    return "number" if isinstance(expected, tuple) else expected.__name__


def _admits(users: tuple[str, ...], who: Identity) -> bool:
    return any(entry == "*" or entry == who.name or entry == f"role:{who.role}"
               for entry in users)


class PolicyFile:
    """The policy in force: read from `path`, re-read when the file changes; None as path is
    the policy of a worker without identities that was given no file (analytics for anyone,
    no learning code)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self.current = Policy()
        if path is not None:
            self._stamp = file_stamp(path)
            self.current = Policy.parse(path.read_text())

    def reload_if_changed(self) -> bool:
        """Re-reads the file if it changed; True if a new policy is now in force. A version
        that does not parse, or a missing file, leaves the last good policy in force."""
        if self.path is None:
            return False
        stamp = file_stamp(self.path)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            self.current = Policy.parse(self.path.read_text())
        except (OSError, PolicyError) as error:
            log.error("policy %s: %s; the last good policy stays in force", self.path, error)
            return False
        log.info("policy %s reloaded", self.path)
        return True
