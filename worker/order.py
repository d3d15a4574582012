"""A holder's defence of its order statistics: what a coordinator driving a search may ask.

An order statistic is one row's value, and the coordinator picks the intervals whose counts the
holder releases, so the holder itself decides three things. At admission (`probes_of`, read by
the site policy): a task with order statistics runs only where `[analytics]
reveal_order_statistics` is true or the task is under differential privacy, and only when its
signed graph needs no more thresholds than `[analytics] max_order_probes`. At each step
(`SearchGuard`): every interval sent must lie inside the one this holder counted in at the
search's previous step, aligned to the step's bucket size (a descent along one path of the
tree, never a jump elsewhere), and the thresholds served so far, a step asked for again
included, stay within the cap.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from sdk.analytics import order
from sdk.analytics.errors import EvaluationError
from sdk.analytics.graph import Graph
from sdk.analytics.plan import Plan
from sdk.proto import task_pb2

DEFAULT_MAX_ORDER_PROBES = 20_000  # thresholds per task and column: 5 quantiles' worth


def probes_of(spec: task_pb2.TaskSpec) -> int:
    """The thresholds a task's order statistics count against, per column (0 for none, for a
    learning task, or for a graph that cannot be read, which the analytics job refuses)."""
    if spec.kind == task_pb2.TASK_KIND_LEARNING:
        return 0
    try:
        graph, _ = Graph.from_proto(spec.analytics)
    except ValueError:
        return 0
    return sum(order.probes(n.params) for n in graph.nodes if _is_search(n))


class SearchGuard:
    """Checks each step's order searches before this holder counts anything."""

    def __init__(self, plan: Plan, max_probes: int) -> None:
        self.plan = plan
        for node in plan.graph.nodes:
            if _is_search(node) and node.params["step"]:
                _check_link(plan, node)
        self.max_probes = max_probes
        self.served = 0
        self.lows: dict[int, pd.DataFrame] = {}  # search node -> the intervals it counted in

    def check(self, stage: int, inputs: dict[int, Any]) -> None:
        """EvaluationError if a step's search asks past the cap or leaves its path; else
        counts its thresholds as served and remembers its intervals for the next step."""
        searches = [self.plan.graph[n] for n in self.plan.reductions_in(stage)
                    if _is_search(self.plan.graph[n])]
        lows = {node.id: self._lows(node, inputs) for node in searches
                if node.params["step"] > 0}
        for node_id, sent in lows.items():
            self._check_descent(self.plan.graph[node_id], sent)
        wanted = sum(order.probes(node.params) for node in searches)
        if self.served + wanted > self.max_probes:
            raise EvaluationError(
                f"step {stage + 1} would take the task's order-statistic thresholds to "
                f"{self.served + wanted}, past this holder's cap of {self.max_probes} per column "
                "([analytics] max_order_probes): refused")
        self.served += wanted
        self.lows.update(lows)

    def _lows(self, node: Any, inputs: dict[int, Any]) -> pd.DataFrame:
        state = inputs.get(node.inputs[-1])
        lows = state.get("lo") if isinstance(state, dict) else None
        expected = order.targets(node.params["stat"], node.params.get("q"))
        if (not isinstance(lows, pd.DataFrame) or lows.dtypes.ne("uint64").any()
                or list(lows.index) != list(range(expected))):
            raise EvaluationError(f"the state sent to order search node {node.id} is not one "
                                  f"interval per target ({expected}): refused")
        return lows

    def _check_descent(self, node: Any, lows: pd.DataFrame) -> None:
        step = node.params["step"]
        size = 1 << (64 - order.BITS * step)
        parent_size = size << order.BITS
        parent = self.lows.get(node.inputs[-1])
        for target in lows.index:
            for column in lows.columns:
                low = int(lows.at[target, column])
                start = 0 if parent is None else _parent_low(parent, target, column)
                if low % size or not start <= low < start + parent_size:
                    raise EvaluationError(
                        f"order search node {node.id} was sent an interval outside the one "
                        "this holder counted in at the previous step: not a bisection, refused")


def _parent_low(parent: pd.DataFrame, target: int, column: Any) -> int:
    if column not in parent.columns:
        raise EvaluationError("an order search was sent a column it did not count before: "
                              "refused")
    return int(parent.at[target, column])


def _check_link(plan: Plan, node: Any) -> None:
    """EvaluationError unless a later step of a search is fed by the step before it of the same
    search, over the same values: then the graph's steps are the searches the cap counted."""
    step = node.params["step"]
    previous = plan.graph[node.inputs[-1]]
    same = {k: v for k, v in node.params.items() if k != "step"}
    if (previous.op != "reduce" or previous.params != {**same, "step": step - 1}
            or order.data_inputs(previous.inputs, step - 1) != order.data_inputs(node.inputs,
                                                                                 step)):
        raise EvaluationError(f"order search node {node.id} is not fed by the step before it: "
                              "the task's graph is refused")


def _is_search(node: Any) -> bool:
    return node.op == "reduce" and node.params.get("kind") in (order.KIND, order.GROUPED_KIND)
