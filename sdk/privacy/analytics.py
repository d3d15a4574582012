"""Differential privacy of an analytics task: its releases, their noise, and what they cost.

Each reduction a plan runs on the workers releases additive parts (sums, counts, sums of
squared deviations); under DP each part, per column, is one release with a sensitivity that the
graph's bounds give (`sdk.privacy.bounds`): 1 for a count, the largest |value| for a sum, the
bound's width for deviations from the mean and its square for squared deviations. A grouped
part is one release too: a row is in one group, and the groups are the keys the task declares.
Every release gets Skellam noise of standard deviation z times its sensitivity, with one noise
multiplier z calibrated so that the whole task costs (epsilon, delta).

Sums, squares and deviations travel as floats in fixed point (10^precision units), counts as
exact integers: each worker casts its parts so, so that the layout of what it sends never
depends on its rows. The SDK builds this plan to refuse early and to show the noise; every
worker builds it again from the signed graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sdk.analytics import order
from sdk.analytics.ops import grouped
from sdk.analytics.plan import Plan, PrivacyError
from sdk.privacy.accounting import Cost, calibrate, epsilon
from sdk.privacy.bounds import Frame, Interval, bounds_of
from sdk.privacy.noise import Noise
from sdk.privacy.spec import DifferentialPrivacy, PrivacyRefused

# The parts each reduction releases, and each part's sensitivity given the data's bound.
_PARTS = {
    "count": ("count",), "sum": ("sum",), "mean": ("sum", "count"),
    "var": ("squares", "deviations", "count"), "std": ("squares", "deviations", "count"),
    "sem": ("squares", "deviations", "count"), "size": ("size",),
    "all": ("matches",), "any": ("matches",),
    "describe": ("count", "sum", "squares", "deviations"),
    "value_counts": ("size",), "histogram": ("size",), "crosstab": ("size",),
    "skew": ("count", "deviations", "squares", "cubes", "fourths"),
    "kurt": ("count", "deviations", "squares", "cubes", "fourths"),
}
# Reductions not released under DP, and why.
_NOT_UNDER_DP = dict.fromkeys(
    ["pairwise_mean", "cov", "corr"],
    "its parts are centred on a mean per pair of columns, which deltaflow does not yet clamp "
    "into the columns' bounds, so one row's effect on them is not bounded; use var() of "
    "clipped columns, or run it without differential privacy")
_INTEGER_PARTS = {"count", "size", "matches"}
_SENSITIVITY: dict[str, Callable[[Interval], float]] = {
    "sum": lambda bound: bound.magnitude,
    "deviations": lambda bound: bound.width,
    "squares": lambda bound: bound.width**2,
    "cubes": lambda bound: bound.width**3,
    "fourths": lambda bound: bound.width**4,
}


@dataclass(frozen=True)
class Release:
    """One released part of one reduction: `column` is the column of a DataFrame's reduction
    (None for a Series'); its sensitivity is in the value's own units."""

    node: int
    part: str
    column: Any
    sensitivity: float

    @property
    def integer(self) -> bool:
        return _is_count(self.part)

    def units(self, precision: int) -> float:
        """The sensitivity in fixed-point units: a float part is rounded to the grid once."""
        return self.sensitivity if self.integer else self.sensitivity * 10.0**precision + 1


class PrivacyPlan:
    """The releases of a plan under (epsilon, delta)-DP, with the noise of each.
    PrivacyRefused, with what to change, when a release has no bound."""

    def __init__(self, plan: Plan, privacy: DifferentialPrivacy, precision: int) -> None:
        self.plan = plan
        self.privacy = privacy
        self.precision = precision
        bounds = bounds_of(plan.graph, plan.row_wise)
        self.data_bound: dict[int, Interval | Frame] = {}
        self.releases: list[Release] = []
        for node_id in sorted(plan.stage_of):
            self.releases += self._releases_of(node_id, bounds)
        units = [r.units(precision) for r in self.releases]

        def cost_at(z: float) -> Cost:
            return Cost.total(Noise.for_sigma(z * u).cost(u, u) for u in units)

        self.noise_multiplier = calibrate(cost_at, privacy.epsilon, privacy.delta)
        self.noise = {(r.node, r.part, r.column): Noise.for_sigma(self.noise_multiplier * u)
                      for r, u in zip(self.releases, units, strict=True)}
        self._costs = {key: noise.cost(u, u)  # each release's, once
                       for (key, noise), u in zip(self.noise.items(), units, strict=True)}

    def _releases_of(self, node_id: int, bounds: dict[int, Any]) -> list[Release]:
        node = self.plan.graph[node_id]
        kind = node.params["kind"]
        keyed = grouped(kind)
        kind = kind.removeprefix("groupby_")
        where = f"{kind}() (node {node_id})"
        if kind in _NOT_UNDER_DP:
            raise PrivacyRefused(f"under differential privacy, {where} is refused: "
                                 f"{_NOT_UNDER_DP[kind]}")
        if keyed and kind == order.KIND:
            raise PrivacyRefused(f"under differential privacy, a grouped {node.params['stat']}() "
                                 f"(node {node_id}) is not built yet")
        if keyed and node.params.get("declared_keys") is None:
            raise PrivacyRefused(
                f"under differential privacy, {where} needs the keys it reports, declared: "
                "d.groupby('dept', keys=['a', 'b']), s.value_counts(values=[...]), "
                "crosstab(a, b, row_values=[...], column_values=[...]); a key that appears in "
                "the answer is itself a release")
        if kind == order.KIND and node.params["stat"] in ("min", "max"):
            raise PrivacyRefused(
                f"under differential privacy, {node.params['stat']}() (node {node_id}) is "
                "refused: the noise that hides one row hides the edge of the data, and a noisy "
                "search for it strays out of the data; ask for quantile(0.01) or "
                "quantile(0.99)")
        if node.params.get("skipna") is False:
            raise PrivacyRefused(f"under differential privacy, {where} skips missing values: "
                                 "skipna=False would release whether one is present")
        names = order.released_parts(node.params) if kind == order.KIND else _PARTS[kind]
        data = bounds.get(node.inputs[0]) if "size" not in names else None  # counts of rows
        if isinstance(data, Frame) and data.columns is None:
            raise PrivacyRefused(
                f"under differential privacy, {where} reduces a DataFrame whose columns are not "
                "named in the task: select them (d[['age', 'wage']]), so that the numbers "
                "released are known when the task is built")
        self.data_bound[node_id] = data
        columns = data.columns if isinstance(data, Frame) else (None,)
        releases = []
        for part in names:
            for column in columns:
                bound = data.column(column) if isinstance(data, Frame) else data
                name = column if column is not None else _unbounded_columns(
                    self.plan, bounds, node.inputs[0])
                releases.append(Release(node_id, part, column,
                                        self._sensitivity(part, bound, name, where)))
        return releases

    @staticmethod
    def _sensitivity(part: str, bound: Interval | None, column: Any, where: str) -> float:
        if _is_count(part):
            return 1.0
        if bound is None or not bound.finite:
            columns = [column] if isinstance(column, str) else list(column or [])
            name = (f"column {columns[0]!r}" if len(columns) == 1 else
                    f"columns {', '.join(map(repr, columns))}" if columns else
                    "the values it reduces")
            raise PrivacyRefused(
                f"under differential privacy, {where} needs a bound on {name}: clip it "
                "(.clip(0, 20_000)), filter it with between(), or reduce booleans, so that one "
                "row's effect on the answer is known")
        return _SENSITIVITY[part](bound)

    # What a worker does with it.

    def cost(self, stage: int | None = None) -> Cost:
        """The cost of one step's releases (all of the task's with None)."""
        nodes = set(self.plan.reductions_in(stage)) if stage is not None else None
        return Cost.total(cost for (node, *_), cost in self._costs.items()
                          if nodes is None or node in nodes)

    def epsilon(self) -> float:
        return epsilon(self.cost(), self.privacy.delta)

    def clamp_mean(self, node_id: int, mean: Any) -> Any:
        """The mean a spread reduction centres on, inside the data's bound: whatever the
        coordinator sends, a row's deviation stays within the bound's width. PrivacyError for
        a mean of another kind than the reduction's own (a Series for one number, say)."""
        bound = self.data_bound[node_id]
        grouped = self.plan.graph[node_id].params["kind"].startswith("groupby_")
        framed = isinstance(bound, Frame)
        kind, what = {(False, False): (None, "a number"),
                      (False, True): (pd.Series, "a Series (one mean per key)"),
                      (True, False): (pd.Series, "a Series (one mean per column)"),
                      (True, True): (pd.DataFrame, "a DataFrame (one mean per key and column)"),
                      }[(framed, grouped)]
        try:
            if kind is None and not isinstance(mean, (pd.Series, pd.DataFrame)):
                return bound.clamp(float(mean))
            if kind is None or not isinstance(mean, kind):
                raise TypeError("another kind")
            if not framed:
                return _clipped(mean, bound)
            columns = pd.Index(bound.columns)
            if grouped:
                mean = mean.reindex(columns=columns)
                return pd.DataFrame({i: _clipped(mean.iloc[:, i], bound.column(c))
                                     for i, c in enumerate(columns)}).set_axis(columns, axis=1)
            mean = pd.to_numeric(mean.reindex(columns)).astype("float64")
            return pd.Series([bound.column(c).clamp(v) for c, v in zip(columns, mean)],
                             index=columns, dtype="float64")
        except (TypeError, ValueError):
            raise PrivacyError(f"the mean sent for {self.plan.graph[node_id].params['kind']}() "
                               f"(node {node_id}) is not {what} of numbers: refused") from None

    def fix_layout(self, node_id: int, parts: dict[str, Any]) -> dict[str, Any]:
        """The parts of node `node_id` on exactly the columns the task names (a column that
        select_dtypes or numeric_only left out counts as 0), sums as float64 and counts as
        int64, so that the layout the coordinator sees depends on the task alone. Grouped
        parts are on the declared keys already (`sdk.analytics.plan`)."""
        data = self.data_bound[node_id]
        grouped = self.plan.graph[node_id].params["kind"].startswith("groupby_")
        columns = pd.Index(data.columns) if isinstance(data, Frame) else None
        fixed = {}
        released = {part for node, part, _ in self.noise if node == node_id}
        for name, value in parts.items():
            if name not in released:
                continue  # what the task does not release (a dtype's zero row) stays here
            if columns is not None and isinstance(value, pd.DataFrame):
                value = value.reindex(columns=columns, fill_value=0)
            elif columns is not None and not grouped and isinstance(value, pd.Series):
                value = value.reindex(columns, fill_value=0)
            dtype = np.dtype("int64" if _is_count(name) else "float64")
            fixed[name] = (value.astype(dtype) if isinstance(value, (pd.Series, pd.DataFrame))
                           else dtype.type(value))
        return fixed

    def add_noise(self, node: int, part: str, labels: list[Any], values: list[int],
                  shares: int) -> list[int]:
        """`values` (fixed-point integers of one column of a part, one label each: a column's
        name, or a key) with this worker's share of their noise, `shares` workers adding one."""
        column_wise = isinstance(self.data_bound[node], Frame)
        keys = [(node, part, label if column_wise else None) for label in labels]
        noised = list(values)
        for key in dict.fromkeys(keys):
            places = [i for i, k in enumerate(keys) if k == key]
            for i, value in zip(places, self.noise[key].add_exact([values[i] for i in places],
                                                                  shares)):
                noised[i] = value
        return noised

    def describe(self, spread: float = 1.0) -> list[str]:
        """One line per release: the standard deviation of its noise, in the value's units,
        times `spread` (the noise a sum carries over the calibrated amount)."""
        lines = []
        for (node, part, column), noise in self.noise.items():
            units = 1 if _is_count(part) else 10.0**self.precision
            kind = self.plan.graph[node].params["kind"]
            where = f"{kind}() node {node}, its {part}" + (
                f" of {column!r}" if column is not None else "")
            lines.append(f"{where}: noise std {spread * noise.std() / units:.4g}")
        return lines


def _is_count(part: str) -> bool:
    """Whether a part is a count: one row moves it by at most 1, and it travels as an integer
    (an order search's counts per bucket too: a row is in one bucket of each target)."""
    return part in _INTEGER_PARTS or order.is_count(part)


def _clipped(values: pd.Series, bound: Interval) -> pd.Series:
    return pd.to_numeric(values).astype("float64").clip(bound.low, bound.high)


def _unbounded_columns(plan: Plan, bounds: dict[int, Any], node_id: int) -> list[Any]:
    """The columns whose lack of a bound leaves node `node_id` unbounded (`(d.id == 57) *
    d.wage` is unbounded for want of a bound on 'wage'; the comparison bounds 'id')."""
    found: list[Any] = []
    pending, seen = [node_id], set()
    while pending:
        node = plan.graph[pending.pop()]
        bound = bounds.get(node.id)
        if node.id in seen or isinstance(bound, Interval) and bound.finite:
            continue
        seen.add(node.id)
        if node.op == "getitem" and not isinstance(node.params["key"], (list, tuple)):
            found.append(node.params["key"])
        else:
            pending += [i for i in node.inputs if i in plan.row_wise]
    return sorted(set(found), key=str)
