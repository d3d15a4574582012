"""A step of an analytics graph over a Parquet file reduced by Arrow's compute kernels, batch by
batch, without turning the rows into pandas frames: the columnar twin of worker/pushdown.py.

What maps: the sums, counts and means, and the sums of deviations from a sent mean (var, std,
sem), over every row of the whole frame, one column or a list of columns, of the columns pandas
reads as float64, int64 or bool (an int64 column with a null is float64, as pandas reads it; a
bool column with a null, objects in pandas, does not map), and counts of text columns. NaN and
nulls are missing, as in pandas; an int64 sum wraps, as pandas' does. Filters, row-wise
arithmetic, groups, other reductions and other types do not map, and are read in chunks; so
does a file whose columns pandas does not name as the file does, once each (a field name twice,
labels its metadata restores as numbers or tuples), and a mean sent for a spread that is not a
real number per column.

The parts are pandas' own: their labels and dtypes come from the same step evaluated by the
chunked reader over one row of the same dtypes, with the `min_rows` rule decided by the whole
file's counts (worker/chunks.py's TableSets), and their values from Arrow's sums, added batch by
batch as the chunked reader adds its chunks'.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from sdk.analytics.graph import Node
from sdk.analytics.plan import Parts, Plan, check_inputs, worker_parts
from worker.datasets import DatasetError
from worker.pushdown import NotMapped
from worker.sources import FileTable

log = logging.getLogger("deltaflow.worker")

KINDS = {"sum", "count", "mean", "var", "std", "sem"}
_SPREAD = {"var", "std", "sem"}
_PARAMS = {"kind", "skipna", "numeric_only", "ddof"}
MOST_THREADS = 4  # each decodes a row group's pages: about 30 MiB apiece at 1M rows of 5 columns


@dataclass
class ColumnTotals:
    """The sums over one column's values that a step needs, batch by batch: the count and sum of
    its present values, and per centre the sums of the deviations from it and of their squares."""

    kind: str  # float64, int64, bool or text: how pandas reads the column
    count: int = 0
    total: Any = 0
    spread: dict[float, list[Any]] = field(default_factory=dict)  # centre -> [squares, sum, n]

    def add(self, column: Any) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc
        if self.kind == "float64":  # an int64 column with a null too, as pandas reads it
            total, count = _present_sum(_floats(column))
            self.total += total
            self.count += count
        else:  # no nulls: a bool or int64 column with one is not of these kinds
            self.count += len(column) - column.null_count
            if self.kind == "int64":
                self.total = _wrapped(self.total + pc.sum(column, min_count=0).as_py())
            elif self.kind == "bool":
                self.total += pc.sum(column, min_count=0).as_py()
        if self.spread:
            values = _floats(column)
            for centre, sums in self.spread.items():
                deviation = pc.subtract(values, pa.scalar(centre, pa.float64()))
                squares, _ = _present_sum(pc.multiply(deviation, deviation))
                deviations, present = _present_sum(deviation)
                sums[0] += squares
                sums[1] += deviations
                sums[2] += present

    def merge(self, other: ColumnTotals) -> None:
        """Adds the totals of another part of the column."""
        self.count += other.count
        self.total = _wrapped(self.total + other.total) if self.kind == "int64" else \
            self.total + other.total
        for centre, sums in other.spread.items():
            self.spread[centre] = [a + b for a, b in zip(self.spread[centre], sums)]


def _floats(column: Any) -> Any:
    """`column` as float64, integers rounded as pandas rounds them (Arrow's checked cast would
    refuse one beyond 2**53, quoting it)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    return pc.cast(column, pa.float64(), safe=False)


def _present_sum(column: Any) -> tuple[float, int]:
    """The sum and count of a float64 array's values that are neither null nor NaN."""
    import pyarrow.compute as pc
    total = pc.sum(column, min_count=0).as_py()
    if math.isnan(total):  # a NaN among them (or inf - inf, which pandas gives too)
        column = column.filter(pc.invert(pc.is_nan(column)))
        total = pc.sum(column, min_count=0).as_py()
    return total, len(column) - column.null_count


def _wrapped(value: int) -> int:
    """`value` as int64 arithmetic gives it: wrapped into [-2**63, 2**63)."""
    return (value + 2**63) % 2**64 - 2**63


@dataclass(frozen=True)
class Mapped:
    """A reduction of the step: its node, the labels of the columns it covers, and whether its
    rows are a Series (one column) or a frame."""

    node: Node
    labels: tuple[str, ...]
    series: bool
    centres: dict[str, float] | None  # per label, for var, std and sem


def arrow_parts(plan: Plan, stage: int, argument: str, table: FileTable, inputs: dict[int, Any],
                min_rows: int, batch_rows: int) -> Parts | None:
    """The parts of `stage` over Parquet file `table`, reduced in Arrow; None where the step does
    not map (the chunked reader then gives pandas' answer, or its error); PrivacyError where
    `inputs` hold a value the step does not need."""
    check_inputs(plan, stage, inputs)
    try:
        dtypes = table.pandas_dtypes()
        if not dtypes.index.is_unique or not all(isinstance(label, str) for label in dtypes.index) \
                or not set(dtypes.index) <= set(table.columns()):
            raise NotMapped("columns that pandas does not name as the file does, once each")
        kinds = {label: _kind(dtype) for label, dtype in dtypes.items()}
        mapped = [_mapped(plan.graph[n], plan, argument, kinds, inputs)
                  for n in plan.reductions_in(stage)]
    except NotMapped as reason:
        log.info("step %d over %r is read in chunks: %s", stage + 1, table.name, reason)
        return None
    try:
        rows, totals = _scan(table, kinds, mapped, batch_rows)
    except DatasetError:
        raise
    except Exception as error:  # noqa: BLE001 - Arrow's message may quote a value of the file
        log.warning("step %d over %r: Arrow could not reduce it (%s: %s); it is read in chunks",
                    stage + 1, table.name, type(error).__name__, error)
        return None
    return _shaped(plan, stage, argument, mapped, totals, dtypes, rows, inputs, min_rows)


def _scan(table: FileTable, kinds: dict[str, str], mapped: list[Mapped],
          batch_rows: int) -> tuple[int, dict[str, ColumnTotals]]:
    """The file's rows, and the totals of the columns `mapped` covers. Row groups are decoded a
    run of them per core, up to MOST_THREADS (a file of one row group on Arrow's threads), and
    the runs' totals added in the file's order."""
    import pyarrow as pa
    centres: dict[str, set[float]] = {label: set() for m in mapped for label in m.labels}
    for m in mapped:
        for label, centre in (m.centres or {}).items():
            centres[label].add(centre)

    def fresh() -> dict[str, ColumnTotals]:
        return {label: ColumnTotals(kinds[label], spread={c: [0.0, 0.0, 0] for c in around})
                for label, around in centres.items()}

    def reduce(row_groups: list[int], threads: bool) -> tuple[int, dict[str, ColumnTotals]]:
        totals, rows = fresh(), 0
        for batch in table.batches(list(totals), batch_rows, row_groups, threads):
            rows += batch.num_rows
            for label, column in zip(batch.schema.names, batch.columns):
                totals[label].add(column)
        return rows, totals

    threads = min(pa.cpu_count(), MOST_THREADS)
    runs = [list(r) for r in np.array_split(range(table.row_groups()), threads) if len(r)]
    with ThreadPoolExecutor(len(runs) or 1, thread_name_prefix="parquet") as pool:
        done = list(pool.map(lambda run: reduce(run, len(runs) == 1), runs))
    totals, rows = fresh(), sum(n for n, _ in done)
    for _, run_totals in done:
        for label, column in totals.items():
            column.merge(run_totals[label])
    return rows, totals


def _kind(dtype: Any) -> str:
    """How a column of pandas dtype `dtype` is reduced: float64, int64, bool, text (counted
    only) or other (not mapped)."""
    if isinstance(dtype, pd.StringDtype):
        return "text"
    return str(dtype) if str(dtype) in ("float64", "int64", "bool") else "other"


def _mapped(node: Node, plan: Plan, argument: str, kinds: dict[str, str],
            inputs: dict[int, Any]) -> Mapped:
    kind = node.params["kind"]
    if kind not in KINDS or set(node.params) - _PARAMS or \
            node.params.get("skipna", True) is not True:
        raise NotMapped(f"the reduction {kind} with {sorted(node.params)}")
    rows = plan.graph[node.inputs[0]]
    source = rows if rows.op == "source" else plan.graph[rows.inputs[0]] if rows.op == "getitem" \
        else None
    if source is None or source.op != "source" or source.params["argument"] != argument:
        raise NotMapped("a reduction of rows other than the file's own columns")
    if rows.op == "source":
        if node.params.get("numeric_only", False):  # without its text; what is "other" may
            if "other" in kinds.values():             # or may not be numeric in pandas
                raise NotMapped("numeric_only over columns of types that do not map")
            labels = tuple(label for label, kind in kinds.items() if kind != "text")
        else:
            labels = tuple(kinds)
        series = False
    else:
        key = rows.params["key"]
        series = not isinstance(key, list)
        labels = (key,) if series else tuple(key)
        if len(set(labels)) != len(labels):
            raise NotMapped("a column selected twice")
    for label in labels:
        if label not in kinds or kinds[label] == "other":
            raise NotMapped(f"column {label!r} is missing, or of a type that does not map")
        if kinds[label] == "text" and kind != "count":
            raise NotMapped("a sum of text")
    centres = _centres(inputs.get(node.inputs[-1]), labels, series) if kind in _SPREAD else None
    return Mapped(node, labels, series, centres)


def _centres(mean: Any, labels: tuple[str, ...], series: bool) -> dict[str, float]:
    """The mean each column's deviations are taken from (NaN where none is sent for it; one
    NaN object, as totals are keyed by their centre). The coordinator sends it: anything but
    real numbers, one per label of a flat index, is left to pandas in chunks."""
    if isinstance(mean, pd.Series) and not series:
        if isinstance(mean.index, pd.MultiIndex) or not mean.index.is_unique:
            raise NotMapped("a mean whose labels are not one per column")
        centres = {label: mean[label] if label in mean.index else math.nan for label in labels}
    else:
        centres = dict.fromkeys(labels, mean)
    try:
        if any(isinstance(c, (complex, np.complexfloating)) for c in centres.values()):
            raise TypeError
        centres = {label: float(c) for label, c in centres.items()}
    except (TypeError, ValueError, OverflowError):
        raise NotMapped("a mean that is not a real number") from None
    return {label: math.nan if math.isnan(c) else c for label, c in centres.items()}


def _shaped(plan: Plan, stage: int, argument: str, mapped: list[Mapped],
            totals: dict[str, ColumnTotals], dtypes: dict[Any, Any], rows: int,
            inputs: dict[int, Any], min_rows: int) -> Parts:
    """The step's parts: pandas' own over one row of the file's dtypes under the whole file's
    `min_rows` decisions (their labels and dtypes), holding Arrow's totals."""
    from worker.chunks import TableSets
    source = next(n.id for n in plan.graph.nodes
                  if n.op == "source" and n.params["argument"] == argument)
    decided: dict[tuple[str, int], Any] = {("rows", source): rows}
    for m in mapped:  # a column without values is left as it is (nothing to count as empty)
        counts = pd.Series({label: totals[label].count or min_rows for label in m.labels},
                           dtype="int64")
        decided[("rows", m.node.id)] = rows
        decided[("cells", m.node.id)] = counts.iloc[0] if m.series else counts
    one_row = pd.DataFrame({label: pd.Series([_ONE[totals[label].kind]], dtype=dtype)
                            for label, dtype in dtypes.items() if label in totals})
    one_row.columns.name = dtypes.index.name
    template = worker_parts(plan, stage, {argument: one_row}, dict(inputs),
                            sets=TableSets(min_rows, decided))
    if 0 < rows < min_rows:  # the parts of no rows, as the chunked reader gives them
        return template

    def value(m: Mapped, name: str, label: Any) -> Any:
        column = totals.get(label)
        if column is None or label not in m.labels or 0 < column.count < min_rows:
            return 0  # a column the step lacks, or a cell counted as empty
        if name == "count":
            return column.count if m.centres is None else column.spread[m.centres[label]][2]
        if name == "sum":
            return column.total
        return column.spread[m.centres[label]][0 if name == "squares" else 1]

    parts: Parts = {}
    for m in mapped:
        named = {}
        for name, shape in template[m.node.id].items():
            if isinstance(shape, pd.Series):
                named[name] = pd.Series([value(m, name, label) for label in shape.index],
                                        index=shape.index, dtype=shape.dtype, name=shape.name)
            else:
                named[name] = type(shape)(value(m, name, m.labels[0]))
        parts[m.node.id] = named
    return parts


_ONE = {"float64": 0.0, "int64": 0, "bool": False, "text": "x"}  # a value of each kind
