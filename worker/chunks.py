"""A step of an analytics graph over tables read in chunks, so that a worker's memory is bounded
by a chunk and not by its table.

Only the columns the graph selects from a table are read. Each chunk's parts are added up across
chunks (every part is a sum over rows). The `min_rows` rule still applies to the whole table's
sets, never to a chunk's: each pass counts every set (what a filter kept, a group, a cell) over
the whole table, and where one is too small, the step is read again with those sets left out,
until the sets left out are exactly the sets too small among what remains (one pass when none
is too small, as is usual for a table larger than a chunk).
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import pandas as pd

from sdk.analytics.ops import add_parts, by, key_sizes, per_row
from sdk.analytics.plan import Parts, Plan, SmallSets, empty_pairs, worker_parts
from worker.arrow_parts import arrow_parts
from worker.pushdown import pushed_parts
from worker.sources import FileTable, SqlTable, Table

log = logging.getLogger("deltaflow.worker")

Counts = dict[tuple[str, int], Any]  # (kind of set, node id) -> its size(s) over the table


def used_columns(plan: Plan, argument: str) -> list[Any] | None:
    """The columns the graph selects from dataset `argument`; None where it uses the whole
    frame (a filter of it, a reduction or a method over it)."""
    sources = {n.id for n in plan.graph.nodes
               if n.op == "source" and n.params["argument"] == argument}
    used: list[Any] = []
    for node in plan.graph.nodes:
        if not sources.intersection(node.inputs):
            continue
        if node.op != "getitem" or node.inputs[0] not in sources:
            return None
        key = node.params["key"]
        used += [k for k in (key if isinstance(key, (list, tuple)) else [key]) if k not in used]
    return used


def stage_parts(plan: Plan, stage: int, tables: dict[str, Table], inputs: dict[int, Any],
                min_rows: int, chunk_rows: int, pushdown: bool = True) -> Parts:
    """This worker's parts of `stage` over its tables: where `pushdown` is on, pushed down to a
    database where the step maps to SQL, or reduced in Arrow over a Parquet file where it maps
    there; else read in chunks of `chunk_rows` rows."""
    columns = {argument: used_columns(plan, argument) for argument in tables}
    if len(tables) != 1:  # rows of one table at a time would leave the others' out
        frames = {argument: pd.concat(list(table.chunks(columns[argument], chunk_rows)),
                                      ignore_index=True) for argument, table in tables.items()}
        return worker_parts(plan, stage, frames, inputs, min_rows)
    (argument, table), = tables.items()
    if pushdown and isinstance(table, SqlTable):
        parts = pushed_parts(plan, stage, argument, table, inputs, min_rows)
        if parts is not None:
            log.info("step %d over %r: pushed down to its database", stage + 1, table.name)
            return parts
    if pushdown and isinstance(table, FileTable) and table.parquet:
        parts = arrow_parts(plan, stage, argument, table, inputs, min_rows, chunk_rows)
        if parts is not None:
            log.info("step %d over %r: reduced in Arrow", stage + 1, table.name)
            return parts
    return parts_in_chunks(plan, stage, argument, table, columns[argument], inputs, min_rows,
                           chunk_rows)


def parts_in_chunks(plan: Plan, stage: int, argument: str, table: Table,
                    columns: list[Any] | None, inputs: dict[int, Any], min_rows: int,
                    chunk_rows: int) -> Parts:
    """The parts of `stage` over `table` read `chunk_rows` rows at a time, equal to those over
    the whole table at once."""
    chunks = table.chunks(columns, chunk_rows)
    first = list(itertools.islice(chunks, 2))
    if len(first) == 1:  # the table is one chunk: as if read whole
        return worker_parts(plan, stage, {argument: first[0]}, inputs, min_rows)
    chunks = itertools.chain(first, chunks)
    decided: Counts = {}
    passes = 1
    while True:
        sets = TableSets(min_rows, decided)
        total: Parts = {}
        for chunk in chunks:
            parts = worker_parts(plan, stage, {argument: chunk}, inputs, sets=sets)
            total = parts if not total else {
                node: {name: add_parts(total[node][name], value) for name, value in part.items()}
                for node, part in parts.items()}
        if too_small(sets.counts, min_rows) == too_small(decided, min_rows):
            if passes > 1:
                log.info("step %d over %r: read %d times to leave out sets under min_rows",
                         stage + 1, table.name, passes)
            return total
        decided = sets.counts
        chunks = table.chunks(columns, chunk_rows)
        passes += 1


def too_small(counts: Counts, min_rows: int) -> dict[tuple[str, int], Any]:
    """The sets of `counts` with fewer than `min_rows` rows (but some): True for a set of
    rows, the labels (keys, columns, or both) of the groups or cells of a reduction."""
    found: dict[tuple[str, int], Any] = {}
    for key, count in counts.items():
        if isinstance(count, (pd.Series, pd.DataFrame)):
            table = count.stack() if isinstance(count, pd.DataFrame) else count
            labels = frozenset(table[(table > 0) & (table < min_rows)].index)
            if labels:
                found[key] = labels
        elif 0 < count < min_rows:
            found[key] = True
    return found


class TableSets(SmallSets):
    """The `min_rows` rule by the whole table's counts: counts each set over the chunks of this
    pass, and leaves out the sets that `decided` (an earlier pass's counts) found too small."""

    def __init__(self, min_rows: int, decided: Counts) -> None:
        super().__init__(min_rows)
        self.decided = decided
        self.counts: Counts = {}

    def rows(self, node_id: int, rows: Any) -> Any:
        self._count(("rows", node_id), len(rows))
        return rows.iloc[:0] if self._too_small(("rows", node_id)) else rows

    def reducible(self, node_id: int, data: Any, keys: pd.Series | None) -> tuple[Any, Any]:
        if self.min_rows <= 1:
            return data, keys
        if keys is None:
            data = self.rows(node_id, data)
            present = data.notna()
            self._count(("cells", node_id), present.sum())
            cells = self.decided.get(("cells", node_id))
            return (data if cells is None else data.mask(present & (cells < self.min_rows))), None
        keys = keys if keys.index.equals(data.index) else keys.reindex(data.index)
        self._count(("groups", node_id), key_sizes(keys))
        self._count(("cells", node_id), data.notna().groupby(by(keys)).sum())
        sizes = self.decided.get(("groups", node_id))
        if sizes is None:
            return data, keys
        keep = (per_row(sizes, keys) >= self.min_rows).to_numpy()
        data, keys = data[keep], keys[keep]
        small = per_row(self.decided[("cells", node_id)], keys) < self.min_rows
        return data.mask(data.notna() & small), keys

    def pairs(self, node_id: int, parts: dict[str, Any]) -> dict[str, Any]:
        if self.min_rows <= 1:
            return parts
        self._count(("pairs", node_id), parts["count"])
        decided = self.decided.get(("pairs", node_id))
        return parts if decided is None else empty_pairs(parts, decided, self.min_rows)

    def _count(self, key: tuple[str, int], count: Any) -> None:
        self.counts[key] = add_parts(self.counts[key], count) if key in self.counts else count

    def _too_small(self, key: tuple[str, int]) -> bool:
        count = self.decided.get(key)
        return count is not None and 0 < count < self.min_rows
