"""Splits an analytics graph into stages and evaluates them on workers and the coordinator.

A node is *row-wise* when it depends on a worker's rows (a source, or an operation on a row-wise
node) and *aggregate* otherwise. Each reduction of a row-wise node runs in a stage: one round in
which every selected worker computes the additive parts of all reductions of that stage. A
reduction whose rows use aggregates of earlier reductions (``x - x.mean()``) waits for their stage.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial, reduce
from typing import Any

import pandas as pd

from sdk.analytics.errors import EvaluationError, compose
from sdk.analytics.graph import Graph, Node, map_output, output_nodes
from sdk.analytics.ops import (
    REDUCTIONS,
    Keys,
    add_parts,
    apply_row_op,
    by,
    check_node,
    grouped,
    key_index,
    key_sizes,
    per_row,
    reduce_locally,
)

Parts = dict[int, dict[str, Any]]  # reduction node id -> its named additive parts


class Plan:
    """A validated graph with each node's placement and each federated reduction's stage."""

    def __init__(self, graph: Graph, output: Any) -> None:
        self.graph = graph
        self.output = output
        self.row_wise: set[int] = set()
        self.stage_of: dict[int, int] = {}  # federated reduction -> stage
        ready: dict[int, int] = {}  # node -> rounds needed before its value is known
        for node in graph.nodes:
            check_node(node)
            after = max((ready[i] for i in node.inputs), default=0)
            row_input = any(i in self.row_wise for i in node.inputs)
            if node.op == "reduce" and row_input:
                self.stage_of[node.id] = after
                ready[node.id] = after + 1
            else:
                ready[node.id] = after
                if node.op == "source" or row_input:
                    self.row_wise.add(node.id)
        for node_id in output_nodes(output):
            if node_id in self.row_wise:
                raise ValueError(
                    f"the result would hold rows ({graph[node_id].op} node {node_id}); "
                    "execute() must return aggregates"
                )
        self.stage_count = max(self.stage_of.values(), default=-1) + 1

    def reductions_in(self, stage: int) -> list[int]:
        return [n for n, s in self.stage_of.items() if s == stage]

    def inputs_of(self, stage: int) -> list[int]:
        """Aggregate nodes whose values the workers need in this stage."""
        needed: set[int] = set()
        seen: set[int] = set()
        pending = list(self.reductions_in(stage))
        while pending:
            node = self.graph[pending.pop()]
            for i in node.inputs:
                if i in seen:
                    continue
                seen.add(i)
                if i in self.row_wise:
                    pending.append(i)
                elif i not in self.stage_of and self.graph[i].op == "const":
                    pending.append(i)  # constants are evaluated where they are used
                else:
                    needed.add(i)
        return sorted(needed)

    def source_arguments(self) -> set[str]:
        return {n.params["argument"] for n in self.graph.nodes if n.op == "source"}


class PrivacyError(ValueError):
    """A worker refuses what would let others pick or see its rows: values for nodes a step
    does not need (a row mask, say), or its parts in the clear when the task asks otherwise."""


class SmallSets:
    """The `min_rows` rule over the rows at hand: a set of fewer than `min_rows` rows (a
    dataset, what a filter kept, a group, a cell) counts as empty where it is formed. A worker
    that reads a table in chunks decides by the whole table's counts instead (worker/chunks.py)."""

    def __init__(self, min_rows: int) -> None:
        self.min_rows = min_rows

    def rows(self, node_id: int, rows: Any) -> Any:
        """The rows of a source or filter node, or none of them if they are too few."""
        return _at_least(rows, self.min_rows)

    def reducible(self, node_id: int, data: Any, keys: Keys) -> tuple[Any, Any]:
        """What reduction `node_id` may cover of `data` (grouped by `keys`, or not)."""
        return suppress_small_sets(data, keys, self.min_rows)

    def pairs(self, node_id: int, parts: dict[str, Any]) -> dict[str, Any]:
        """Pairwise parts (cov, corr) without the pairs of columns present together in fewer
        than `min_rows` rows: every part of such a pair is 0, as if no row held both."""
        return empty_pairs(parts, parts["count"], self.min_rows)


def check_inputs(plan: Plan, stage: int, inputs: dict[int, Any]) -> None:
    """PrivacyError where `inputs` give a value for a node that `stage` does not need."""
    unexpected = set(inputs) - set(plan.inputs_of(stage))
    if unexpected:
        raise PrivacyError(f"step {stage + 1} was sent values for nodes {sorted(unexpected)}, "
                           "which it does not need: refused")


def worker_parts(
    plan: Plan, stage: int, frames: dict[str, Any], inputs: dict[int, Any], min_rows: int = 1,
    sets: SmallSets | None = None,
) -> Parts:
    """A worker's additive parts of every reduction in `stage`, over its own rows.

    `inputs` may only give the aggregates this stage needs: a value for any other node (a mask
    of rows, say) would let the sender pick the rows summed. A set of fewer than `min_rows` rows
    (a dataset, what a filter kept, a group, the values of a column in one) counts as empty
    where it is formed, before anything else runs on it: its parts are those of no rows, so
    neither they nor an error nor the time taken tell it from an empty set (`sets` decides
    which sets those are; by default, by their size in `frames`). Any failure is an
    `EvaluationError` composed from the graph, which names no value of a row.
    """
    sets = sets or SmallSets(min_rows)
    check_inputs(plan, stage, inputs)
    memo: dict[int, Any] = dict(inputs)

    def value(node_id: int) -> Any:
        if node_id not in memo:
            node = plan.graph[node_id]
            if node.op == "source":
                memo[node_id] = sets.rows(node_id, frames[node.params["argument"]])
            elif node_id not in plan.row_wise and node.op != "const":
                raise PrivacyError(f"step {stage + 1} needs the aggregate of node {node_id}, "
                                   "which was not sent")
            else:
                args = [value(i) for i in node.inputs]
                result = _guarded(node, args, lambda: apply_row_op(node.op, node.params, args))
                memo[node_id] = sets.rows(node_id, result) if node.op == "filter" else result
        return memo[node_id]

    parts: Parts = {}
    for node_id in plan.reductions_in(stage):
        node = plan.graph[node_id]
        arguments = [value(i) for i in node.inputs]  # its rows, then keys or aggregates it uses
        parts[node_id] = _guarded(node, arguments, partial(_parts, node, arguments, sets))
    return parts


def _parts(node: Node, arguments: list[Any], sets: SmallSets) -> dict[str, Any]:
    """The parts of a reduction node over its rows, less the sets too small to cover;
    grouped, over the rows of the declared keys only, and on exactly those keys."""
    kind = node.params["kind"]
    reduction, params = REDUCTIONS[kind], reduction_params(node.params)
    if not grouped(kind):
        rows, _ = sets.reducible(node.id, arguments[0], None)
        parts = reduction.partial(rows, *arguments[1:], **params)
        return sets.pairs(node.id, parts) if reduction.pairwise else parts
    declared = node.params.get("declared_keys")
    if reduction.keys is None:
        rows, keys, aggregates = arguments[0], arguments[1], arguments[2:]
    else:  # keyed by its own rows
        rows, aggregates = arguments[0], arguments[1:]
        keys = reduction.keys(rows, **params)
    if declared is not None:
        rows, keys = _declared_only(rows, keys, declared)
    rows, keys = sets.reducible(node.id, rows, keys)
    parts = reduction.partial(rows, keys, *aggregates, **params)
    if declared is None:
        return parts
    return {name: value.reindex(declared_index(declared, value.index), fill_value=0)
            for name, value in parts.items()}


def declared_index(declared: list[Any], like: pd.Index) -> pd.Index:
    """The declared keys as an index named as `like`: a MultiIndex for tuples of keys."""
    if isinstance(like, pd.MultiIndex):
        return pd.MultiIndex.from_tuples(declared, names=like.names)
    return pd.Index(declared, name=like.name)


# Reductions centred on the mean of an earlier step.
SPREAD = {"var", "std", "sem", "describe", "skew", "kurt"}


def reduction_params(params: dict[str, Any]) -> dict[str, Any]:
    """A reduce node's parameters that its reduction takes (not its kind, nor its keys)."""
    return {k: v for k, v in params.items() if k not in ("kind", "declared_keys")}


def _declared_only(rows: Any, keys: Keys, declared: list[Any]) -> tuple[Any, Keys]:
    """The rows whose key is one the task declares: no other key may appear in the answer."""
    keys = keys if keys.index.equals(rows.index) else keys.reindex(rows.index)
    keep = key_index(keys).isin(declared)
    return rows[keep], keys[keep]


def _guarded(node: Node, args: list[Any], evaluate: Callable[[], Any]) -> Any:
    """`evaluate()`, with any failure turned into an error composed from the graph alone."""
    try:
        return evaluate()
    except EvaluationError:
        raise
    except Exception as error:  # noqa: BLE001 - a library's message may quote a row's value
        raise compose(node, args, error) from None


def _at_least(rows: Any, min_rows: int) -> Any:
    """`rows`, or none of them (with the same columns and dtypes) if fewer than `min_rows`."""
    if isinstance(rows, (pd.Series, pd.DataFrame)) and len(rows) < min_rows:
        return rows.iloc[:0]
    return rows


def suppress_small_sets(data: Any, keys: Keys, min_rows: int) -> tuple[Any, Keys]:
    """The rows of a reduction without groups of fewer than `min_rows` rows (all of them when
    ungrouped and fewer), and with the values of a cell (a column, per group) that holds fewer
    than `min_rows` non-missing values made missing: what the reduction may cover."""
    if min_rows <= 1:
        return data, keys
    if keys is None:
        data = _at_least(data, min_rows)
        present = data.notna()
        return data.mask(present & (present.sum() < min_rows)), None
    keys = keys if keys.index.equals(data.index) else keys.reindex(data.index)
    keep = (per_row(key_sizes(keys), keys) >= min_rows).to_numpy()
    data, keys = data[keep], keys[keep]
    present = data.notna()
    return data.mask(present & (present.groupby(by(keys)).transform("sum") < min_rows)), keys


def empty_pairs(parts: dict[str, Any], counts: pd.DataFrame, min_rows: int) -> dict[str, Any]:
    """Pairwise parts with every pair of columns that `counts` has 1 to min_rows - 1 rows of
    set to 0; other parts (a count of rows) as they are."""
    small = (counts > 0) & (counts < min_rows)
    return {name: value.where(~small.reindex_like(value), 0)
            if isinstance(value, pd.DataFrame) else value for name, value in parts.items()}


class Aggregation:
    """The coordinator's side of a plan: adds workers' parts stage by stage, then the result."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.values: dict[int, Any] = {}

    def inputs_for(self, stage: int) -> dict[int, Any]:
        return {node_id: self.value(node_id) for node_id in self.plan.inputs_of(stage)}

    def add_stage(self, stage: int, parts_per_worker: list[Parts]) -> None:
        """Adds up the parts that every worker sent for `stage` and finalizes its reductions."""
        for node_id in self.plan.reductions_in(stage):
            node = self.plan.graph[node_id]
            names = parts_per_worker[0][node_id].keys()
            total = {
                name: reduce(add_parts, (parts[node_id][name] for parts in parts_per_worker))
                for name in names
            }
            reduction = REDUCTIONS[node.params["kind"]]
            first = 2 if node.params["kind"].startswith("groupby_") else 1  # after the keys
            given = [self.value(i) for i in node.inputs[first:]] if reduction.sees_inputs else []
            self.values[node_id] = reduction.finalize(total, *given,
                                                      **reduction_params(node.params))

    def value(self, node_id: int) -> Any:
        if node_id not in self.values:
            node = self.plan.graph[node_id]
            args = [self.value(i) for i in node.inputs]
            if node.op == "reduce":
                self.values[node_id] = reduce_locally(node.params, args[0])
            else:
                self.values[node_id] = apply_row_op(node.op, node.params, args)
        return self.values[node_id]

    def result(self) -> Any:
        return map_output(self.plan.output, self.value)


def run_in_process(plan: Plan, holders: list[dict[str, Any]]) -> Any:
    """Runs every stage over the given holders' frames in this process: for tests and checks."""
    aggregation = Aggregation(plan)
    for stage in range(plan.stage_count):
        inputs = aggregation.inputs_for(stage)
        aggregation.add_stage(stage, [worker_parts(plan, stage, f, inputs) for f in holders])
    return aggregation.result()
