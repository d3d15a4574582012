"""An analytics task on a worker: its datasets opened once, then the parts of each stage.

The task arrives as a graph of named operations and is evaluated with pandas (or pushed down to
a database as SQL); nothing the submitter wrote is executed here. What leaves is only the
additive parts of reductions.

Under differential privacy the job builds its own PrivacyPlan from the signed graph (never
trusting a claim of the task's or the coordinator's): no set is suppressed by min_rows (the
noise protects every set, and suppression would break the sensitivity: one row could turn a
suppressed group into a released one), the mean a spread reduction is sent is clamped into the
data's bound, the parts are laid out as the task alone decides, and noise is added in fixed
point: a share of it under secure aggregation (by the daemon, before masking), all of it on
this worker's own parts without.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from sdk import values
from sdk.analytics import secure
from sdk.analytics.errors import EvaluationError
from sdk.analytics.graph import Graph
from sdk.analytics.plan import SPREAD, Parts, Plan
from sdk.privacy import DifferentialPrivacy, PrivacyRefused
from sdk.privacy.accounting import Cost
from sdk.privacy.analytics import PrivacyPlan
from sdk.proto import task_pb2
from sdk.secagg import Rule
from worker.chunks import stage_parts
from worker.order import DEFAULT_MAX_ORDER_PROBES, SearchGuard
from worker.sources import DEFAULT_CHUNK_ROWS, Catalog


class AnalyticsJob:
    """A joined analytics task: its plan, its privacy plan under DP, and this worker's tables."""

    def __init__(self, spec: task_pb2.TaskSpec, catalog: Catalog, min_rows: int,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 max_order_probes: int = DEFAULT_MAX_ORDER_PROBES) -> None:
        try:
            self.plan = Plan(*Graph.from_proto(spec.analytics))
        except ValueError as error:  # composed from the graph alone
            raise EvaluationError(f"the task's graph is refused: {error}") from None
        self.tables = {ref.argument: catalog.open(ref.file) for ref in spec.datasets}
        self.chunk_rows = chunk_rows
        self.precision = spec.precision
        self.max_clients = spec.rules.max_clients
        self.secagg = Rule.of(spec)  # the signed threshold and SecAgg+ size
        self.secure = spec.secure_aggregation
        self.privacy = _privacy_plan(spec, self.plan)
        self.min_rows = 1 if self.privacy else min_rows
        self.searches = SearchGuard(self.plan, max_order_probes)

    def describe(self) -> str:
        tables = ", ".join(f"{name}: {type(table).__name__} {table.name!r}"
                           for name, table in self.tables.items())
        if self.privacy is None:
            return tables
        return (f"{tables}; differential privacy: {self.privacy.epsilon():.4g}-DP at delta "
                f"{self.delta:g}, no min_rows suppression")

    def parts(self, stage: int, inputs: Any) -> Parts:
        """This worker's parts of the reductions of `stage` (without noise)."""
        if not 0 <= stage < self.plan.stage_count:
            raise EvaluationError(f"the task has no step {stage + 1}")
        inputs = {int(k): v for k, v in inputs.items()}
        self.searches.check(stage, inputs)
        if self.privacy is None:
            return stage_parts(self.plan, stage, self.tables, inputs, self.min_rows,
                               self.chunk_rows)
        parts = stage_parts(self.plan, stage, self.tables, self._clamped(stage, inputs),
                            self.min_rows, self.chunk_rows)
        return {node: self.privacy.fix_layout(node, named) for node, named in parts.items()}

    def _clamped(self, stage: int, inputs: dict[int, Any]) -> dict[int, Any]:
        """The inputs with the mean each spread reduction centres on clamped into its data's
        bound: whatever the coordinator sends, one row's deviation stays within the bound."""
        for node_id in self.plan.reductions_in(stage):
            node = self.plan.graph[node_id]
            if node.params["kind"].removeprefix("groupby_") in SPREAD and node.inputs[-1] in inputs:
                inputs[node.inputs[-1]] = self.privacy.clamp_mean(node_id, inputs[node.inputs[-1]])
        return inputs

    def compute(self, stage: int, inputs: Any) -> bytes:
        """This worker's parts of `stage`, serialized, for a task without secure aggregation;
        under DP with all of the noise (no other worker's share is in what it sends)."""
        parts = self.parts(stage, inputs)
        if self.privacy is not None:
            layout = secure.layout(parts)
            vector = secure.encode(parts, layout, self.precision, self.max_clients,
                                   self.noise(shares=1))
            parts = secure.decode(vector, layout, self.precision)
        return values.encode(parts).SerializeToString()

    def noise(self, shares: int) -> secure.NoiseHook | None:
        """The hook that adds this worker's share of the noise, `shares` workers adding one
        each (None without DP)."""
        if self.privacy is None:
            return None
        return partial(self.privacy.add_noise, shares=shares)

    # What a budget ledger reads.

    def privacy_cost(self, stage: int) -> Cost | None:
        """The zCDP cost of releasing `stage`; None without DP."""
        return None if self.privacy is None else self.privacy.cost(stage)

    def total_privacy_cost(self) -> Cost | None:
        """The zCDP cost of all the task's releases; None without DP."""
        return None if self.privacy is None else self.privacy.cost()

    @property
    def delta(self) -> float | None:
        """The delta the task's epsilon is stated at; None without DP."""
        return None if self.privacy is None else self.privacy.privacy.delta


def _privacy_plan(spec: task_pb2.TaskSpec, plan: Plan) -> PrivacyPlan | None:
    """The task's PrivacyPlan, built here from the signed spec, or None without DP."""
    try:
        privacy = DifferentialPrivacy.from_spec(spec)
        return None if privacy is None else PrivacyPlan(plan, privacy, spec.precision)
    except PrivacyRefused as error:
        raise EvaluationError(f"the task's differential privacy is refused: {error}") from None
