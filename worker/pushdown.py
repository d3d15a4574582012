"""A step of an analytics graph pushed down to a SQL database as aggregate queries, so that rows
stay in the database and its own engine does the scan.

A step is pushed down only where every operation it uses maps to SQL whose meaning is pandas'
own, and the parts come back exactly as the chunked reader makes them (dtypes, labels and their
order, the `min_rows` rule per set, group and cell): column selection (integer, double, text,
and boolean columns without a NULL), filters by comparisons with numbers (two-valued, as pandas
compares NaN), `& | ~`, `+ - *` (not between two masks, which pandas adds as | and &), division
by a number, `isna`/`notna`, `abs` and negation; the sums, counts, means and sums of squared
deviations (var, std, sem) over rows, and the same per key of a group by one or several
integer, text or bool columns (each key's mean of the previous step joined as a VALUES list of
bind parameters) with the groups' sizes; `value_counts` and `crosstab` of integer, text or bool
columns; histograms with explicit edges (a CASE with numpy's rule: [e_i, e_i+1), the last bin
closed); and declared keys (an IN list) of those. Floor division, modulo, powers, NaN constants, real
(float4) and numeric columns, boolean columns with a NULL (pandas reads objects), keys of a
float column (an integer column with a NULL is one), declared keys of other types than their
column's, skew, kurt, cov, corr and order statistics do not map; nor does a step where
a filter keeps fewer than `min_rows` rows (the chunked reader leaves those out), or whose
integer sum leaves int64 (pandas wraps it). Values of the task travel as bind parameters, never
as SQL text.

Only PostgreSQL tables are pushed down: its types are strict, so a column's SQL type says which
dtype pandas reads it as, and an integer overflow is an error (the step is then read in chunks).
SQLite is left out: its columns are typed per value (an INTEGER column may hold text or reals,
so every step would first scan each column's typeof()); where int64 arithmetic wraps in pandas,
SQLite's `+ - *` turn an overflowing integer into a real without an error; and it compares an
integer with a real exactly, where pandas first rounds the integer to a float64 (2**53 + 1 >
2.0**53 in SQLite, not in pandas).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from sdk.analytics.graph import Node
from sdk.analytics.plan import Parts, Plan, check_inputs, declared_index
from worker.datasets import DatasetError
from worker.sources import SqlTable

log = logging.getLogger("deltaflow.worker")

DIALECTS = {"postgresql"}
_ARITHMETIC = {"add", "sub", "mul"}
_COMPARISONS = {"lt", "le", "gt", "ge", "eq", "ne"}
_GROUPED = {"groupby_sum", "groupby_count", "groupby_mean", "groupby_size", "groupby_var",
            "groupby_std", "groupby_sem"}
_UNGROUPED = {"sum", "count", "mean", "var", "std", "sem"}
_KEY_DTYPES = {"int": "int64", "text": "str", "bool": "bool"}  # key kinds, as pandas reads them
_MOST_PARAMETERS = 30_000  # of one statement (PostgreSQL takes 65,535)


class NotMapped(Exception):
    """A step (or one operation of it) that has no SQL of the same meaning here."""


@dataclass(frozen=True)
class Column:
    """A column of rows in SQL: `kind` is int, float, bool (a two-valued mask), text or other
    (counted only)."""

    expr: Any
    kind: str


@dataclass(frozen=True)
class Rows:
    """A row-wise value: a Series (one column) or a frame, over the rows its filters keep."""

    columns: tuple[tuple[Any, Column], ...]
    series: bool
    filters: tuple[Any, ...] = ()  # conditions, outermost last

    def only(self) -> Column:
        if not self.series:
            raise NotMapped("a frame where a Series is needed")
        return self.columns[0][1]


def pushed_parts(plan: Plan, stage: int, argument: str, table: SqlTable, inputs: dict[int, Any],
                 min_rows: int) -> Parts | None:
    """The parts of `stage` computed by `table`'s database; None where the step does not map
    (or the database refuses a query: the chunked reader then gives pandas' answer, or the
    error); PrivacyError where `inputs` hold a value the step does not need."""
    check_inputs(plan, stage, inputs)
    if table.dialect not in DIALECTS or table.spec.table is None:
        return None
    try:
        with table.connect() as connection:
            return Pushdown(plan, stage, argument, table.selectable(connection), connection,
                            inputs, min_rows).parts()
    except (NotMapped, OverflowError) as reason:  # an integer sum beyond int64, which wraps
        log.info("step %d over %r is read in chunks: %s", stage + 1, table.name, reason)
    except DatasetError as error:
        log.info("step %d over %r is read in chunks: %s", stage + 1, table.name, error)
    return None


class Pushdown:
    """One step over one table, compiled to SQL node by node."""

    def __init__(self, plan: Plan, stage: int, argument: str, source: Any, connection: Any,
                 inputs: dict[int, Any], min_rows: int) -> None:
        import sqlalchemy as sa
        self.sa = sa
        self.plan = plan
        self.stage = stage
        self.argument = argument
        self.source = source
        self.connection = connection
        self.inputs = inputs
        self.min_rows = min_rows
        self.memo: dict[int, Any] = {}
        self.frame = self._source_rows()

    def _source_rows(self) -> Rows:
        """Every column of the table, typed as pandas reads it: an integer column with a NULL
        is float64, a double's NaN is missing."""
        sa = self.sa
        typed = [c for c in self.source.columns if isinstance(c.type, (sa.Integer, sa.Boolean))]
        counts = self.connection.execute(sa.select(
            sa.func.count(), *[sa.func.count(c) for c in typed]).select_from(self.source)).one()
        self.rows = counts[0]
        if 0 < self.rows < self.min_rows:
            raise NotMapped("the table has fewer rows than min_rows")
        complete = {c.name for c, n in zip(typed, counts[1:]) if n == counts[0]}
        columns = []
        for c in self.source.columns:
            if isinstance(c.type, sa.Boolean):  # with a NULL, pandas reads objects
                column = Column(c, "bool" if c.name in complete else "other")
            elif isinstance(c.type, sa.Integer):
                column = (Column(sa.cast(c, sa.BigInteger), "int") if c.name in complete
                          else Column(sa.cast(c, sa.Double), "float"))
            elif isinstance(c.type, sa.Double):
                column = Column(sa.func.nullif(c, sa.cast(sa.literal("NaN"), sa.Double)), "float")
            elif isinstance(c.type, sa.String):
                column = Column(c, "text")
            else:
                column = Column(c, "other")
            columns.append((c.name, column))
        return Rows(tuple(columns), series=False)

    # -- row-wise nodes --------------------------------------------------------------------

    def value(self, node_id: int) -> Any:
        if node_id not in self.memo:
            self.memo[node_id] = self._compile(self.plan.graph[node_id])
        return self.memo[node_id]

    def _compile(self, node: Node) -> Any:
        if node.op == "source":
            if node.params["argument"] != self.argument:
                raise NotMapped("another dataset")
            return self.frame
        if node.id in self.inputs:  # an aggregate sent for this step
            return self.inputs[node.id]
        if node.op == "const":
            return _constant(node.params["value"])
        args = [self.value(i) for i in node.inputs]
        if node.op == "getitem":
            return _select(args[0], node.params["key"])
        if node.op == "filter":
            rows, mask = args
            if not isinstance(rows, Rows) or not isinstance(mask, Rows) or \
                    mask.filters != rows.filters or mask.only().kind != "bool":
                raise NotMapped("a filter by a mask of other rows")
            return replace(rows, filters=rows.filters + (mask.only().expr,))
        if node.op == "binary":
            return self._binary(node.params["op"], *args)
        if node.op == "unary":
            return _per_column(args[0], lambda c: self._unary(node.params["op"], c))
        if node.op == "columns":
            return _side_by_side(args, node.params.get("names"))
        if node.op == "method" and node.params["name"] == "drop" and isinstance(args[0], Rows):
            keywords = dict(zip(node.params["keywords"], args[1:]))
            dropped = keywords.get("columns")
            dropped = set(dropped if isinstance(dropped, (list, tuple)) else [dropped])
            return replace(args[0], columns=tuple(
                (label, c) for label, c in args[0].columns if label not in dropped))
        raise NotMapped(f"{node.op} {node.params.get('op') or node.params.get('name') or ''}")

    def _binary(self, op: str, left: Any, right: Any) -> Rows:
        sa = self.sa
        if isinstance(left, Rows) and isinstance(right, Rows):
            if not (left.series and right.series and left.filters == right.filters):
                raise NotMapped("an operation between rows that do not line up")
            combined = self._column(op, left.only(), right.only())
            return replace(left, columns=((None, combined),))
        rows, number, reflected = (left, right, False) if isinstance(left, Rows) else \
            (right, left, True)
        if not isinstance(rows, Rows):
            raise NotMapped("an operation between aggregates")
        number = _constant(number)
        if not isinstance(number, (int, float)) or isinstance(number, bool):
            raise NotMapped("an operation with a value that is not a number")
        constant = Column(sa.literal(number, sa.BigInteger if isinstance(number, int) and
                                     not isinstance(number, bool) else sa.Double),
                          "int" if isinstance(number, int) else "float")
        if op == "truediv" and not reflected and number != 0:
            return _per_column(rows, lambda c: Column(
                sa.cast(_number(c), sa.Double) / sa.literal(float(number), sa.Double), "float"))
        return _per_column(rows, lambda c: self._column(op, constant, c) if reflected
                           else self._column(op, c, constant))

    def _column(self, op: str, left: Column, right: Column) -> Column:
        sa = self.sa
        if op in ("and", "or"):
            if left.kind != "bool" or right.kind != "bool":
                raise NotMapped(f"{op} of values that are not masks")
            return Column((sa.and_ if op == "and" else sa.or_)(left.expr, right.expr), "bool")
        a, b = _number(left), _number(right)
        if op in _ARITHMETIC:
            if left.kind == right.kind == "bool":  # pandas adds and multiplies masks as | and &
                raise NotMapped(f"{op} of two masks")
            expression = {"add": a + b, "sub": a - b, "mul": a * b}[op]
            return Column(expression, "int" if left.kind == right.kind == "int" else "float")
        if op in _COMPARISONS:
            compared = {"lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b, "eq": a == b,
                        "ne": a != b}[op]
            # pandas compares a missing value as False, and != as True
            return Column(sa.func.coalesce(compared, sa.true() if op == "ne" else sa.false()),
                          "bool")
        raise NotMapped(f"the operator {op}")

    def _unary(self, op: str, column: Column) -> Column:
        sa = self.sa
        if op == "isna" or op == "notna":
            if column.kind == "other":
                raise NotMapped("isna of a column of another type")
            if column.kind == "bool":
                return Column(sa.false() if op == "isna" else sa.true(), "bool")
            return Column(column.expr.is_(None) if op == "isna" else column.expr.is_not(None),
                          "bool")
        if op == "invert" and column.kind == "bool":
            return Column(sa.not_(column.expr), "bool")
        if op in ("neg", "abs") and column.kind in ("int", "float"):
            return Column(-column.expr if op == "neg" else sa.func.abs(column.expr), column.kind)
        raise NotMapped(f"{op} of a {column.kind} column")

    # -- reductions --------------------------------------------------------------------------

    def parts(self) -> Parts:
        reductions = [self.plan.graph[n] for n in self.plan.reductions_in(self.stage)]
        compiled = [(node, [self.value(i) for i in node.inputs]) for node in reductions]
        self._check_filters([args[0] for _, args in compiled])
        return {node.id: self._reduce(node, args) for node, args in compiled}

    def _check_filters(self, rows: list[Any]) -> None:
        """NotMapped where a filter keeps fewer than min_rows rows (but some): the chunked
        reader leaves those out as the rule says."""
        sa = self.sa
        chains = {r.filters[:k] for r in rows if isinstance(r, Rows)
                  for k in range(1, len(r.filters) + 1)}
        if not chains:
            return
        chains_list = sorted(chains, key=len)
        counts = self.connection.execute(sa.select(*[
            sa.func.count(sa.case((sa.and_(*chain), 1))) for chain in chains_list
        ]).select_from(self.source)).one()
        if any(0 < n < self.min_rows for n in counts):
            raise NotMapped("a filter keeps fewer rows than min_rows")

    def _reduce(self, node: Node, args: list[Any]) -> dict[str, Any]:
        kind = node.params["kind"]
        rows = args[0]
        if not isinstance(rows, Rows):
            raise NotMapped("a reduction of aggregates")
        if node.params.get("skipna", True) is not True:
            raise NotMapped("skipna=False")
        if node.params.get("numeric_only") and any(
                c.kind in ("text", "other") for _, c in rows.columns):
            raise NotMapped("numeric_only over columns of other types")
        if kind in _UNGROUPED:
            return self._over_rows(kind, rows, args[1] if len(args) > 1 else None)
        declared = node.params.get("declared_keys")
        if kind in _GROUPED:
            return self._per_key(kind, rows, self._keys(rows, args[1]), declared,
                                 args[2] if len(args) > 2 else None)
        if kind in ("value_counts", "crosstab"):  # rows per distinct row of their own
            return self._per_key("groupby_size", rows, self._keys(rows, rows), declared)
        if kind == "histogram":
            return self._histogram(rows, node.params["bins"], declared)
        raise NotMapped(f"the reduction {kind}")

    def _over_rows(self, kind: str, rows: Rows, mean: Any) -> dict[str, Any]:
        sa = self.sa
        labels = [label for label, _ in rows.columns]
        spread = kind in ("var", "std", "sem")
        selected = [sa.func.count(c.expr) for _, c in rows.columns]
        if kind != "count":
            for label, c in rows.columns:
                x = _number(c, count_only=False)
                if spread:
                    centre = mean if rows.series else _at(mean, label)
                    if _centre(centre) is None:  # no values: every deviation is missing
                        selected += [sa.null(), sa.null()]
                        continue
                    deviation = x - sa.literal(_centre(centre), sa.Double)
                    selected += [sa.func.sum(deviation * deviation), sa.func.sum(deviation)]
                else:
                    selected.append(sa.func.sum(x))
        answer = list(self.connection.execute(
            sa.select(*selected).select_from(self.source).where(*rows.filters)).one())
        counts = answer[:len(labels)]
        sums = answer[len(labels):]
        hidden = [0 < n < self.min_rows for n in counts]  # cells counted as empty
        counts = [0 if h else n for n, h in zip(counts, hidden)]
        kinds = ["float" if h or spread else _sum_kind(c) for h, (_, c) in zip(hidden, rows.columns)]
        if kind == "count":
            return {"count": _shaped(rows, labels, counts, ["int"] * len(labels))}
        if spread:
            squares = [0.0 if h else s for s, h in zip(sums[0::2], hidden)]
            deviations = [0.0 if h else s for s, h in zip(sums[1::2], hidden)]
            counts = [0 if _centre(mean if rows.series else _at(mean, label)) is None else n
                      for n, label in zip(counts, labels)]
            return {"squares": _shaped(rows, labels, squares, kinds),
                    "deviations": _shaped(rows, labels, deviations, kinds),
                    "count": _shaped(rows, labels, counts, ["int"] * len(labels))}
        total = _shaped(rows, labels, [0 if h else s for s, h in zip(sums, hidden)], kinds)
        if kind == "sum":
            return {"sum": total}
        return {"sum": total, "count": _shaped(rows, labels, counts, ["int"] * len(labels))}

    def _keys(self, rows: Rows, keys: Any) -> list[tuple[Any, Column]]:
        """The key columns of a group by (or of a value count): integer, text or bool columns
        of the same rows, each with a label."""
        if not isinstance(keys, Rows) or keys.filters != rows.filters:
            raise NotMapped("keys of other rows")
        if any(key.kind not in _KEY_DTYPES or label is None for label, key in keys.columns):
            raise NotMapped("keys that are not integer, text or bool columns")
        return list(keys.columns)

    def _per_key(self, kind: str, rows: Rows, keys: list[tuple[Any, Column]], declared: Any,
                 mean: Any = None) -> dict[str, Any]:
        """Parts per key: groups of fewer than min_rows rows left out, and a cell (a column in
        a group) of fewer than min_rows values counted as empty, as the chunked reader does;
        with `declared` keys, over their rows only, and on exactly those keys."""
        parts = self._per_key_found(kind, rows, keys, mean, self._declared(keys, declared))
        if declared is None:
            return parts
        return {name: value.reindex(declared_index(declared, value.index), fill_value=0)
                for name, value in parts.items()}

    def _declared(self, keys: list[tuple[Any, Column]], declared: Any) -> tuple[Any, ...]:
        """The condition that a row's key is one of `declared` (none for None): each declared
        key of the key columns' own types (a tuple of them for several keys), as pandas'
        isin matches them."""
        if declared is None:
            return ()
        if len(declared) * len(keys) > _MOST_PARAMETERS:
            raise NotMapped("too many declared keys to send as parameters")
        if len(keys) == 1:
            (_, key), = keys
            return (key.expr.in_([_key_value(k, key.kind) for k in declared]),)
        if any(not isinstance(k, tuple) or len(k) != len(keys) for k in declared):
            raise NotMapped("declared keys that are not tuples of every key")
        return (self.sa.tuple_(*[key.expr for _, key in keys]).in_(
            [tuple(_key_value(v, key.kind) for v, (_, key) in zip(k, keys)) for k in declared]),)

    def _per_key_found(self, kind: str, rows: Rows, keys: list[tuple[Any, Column]], mean: Any,
                       where: tuple[Any, ...]) -> dict[str, Any]:
        """Parts per key of the groups found in the rows `where` keeps."""
        sa = self.sa
        labels = [label for label, _ in rows.columns]
        width, n = len(labels), len(keys)
        spread = kind in ("groupby_var", "groupby_std", "groupby_sem")
        source, centres = self._centred(keys, labels, rows.series, mean) if spread else \
            (self.source, [])
        selected = [key.expr for _, key in keys] + [sa.func.count()] + \
            [sa.func.count(c.expr) for _, c in rows.columns]
        if kind in ("groupby_sum", "groupby_mean"):
            selected += [sa.func.sum(_number(c)) for _, c in rows.columns]
        for (_, c), centre in zip(rows.columns, centres):
            deviation = _number(c) - centre
            selected += [sa.func.sum(deviation * deviation), sa.func.sum(deviation),
                         sa.func.count(deviation)]
        answer = self.connection.execute(
            sa.select(*selected).select_from(source)
            .where(*rows.filters, *where, *[key.expr.is_not(None) for _, key in keys])
            .group_by(*[key.expr for _, key in keys])).all()
        answer = [r for r in answer if r[n] >= self.min_rows]  # groups counted as empty
        index = _key_index([r[:n] for r in answer], keys)
        counts = [[r[n + 1 + i] for r in answer] for i in range(width)]
        hidden = [[0 < c < self.min_rows for c in column] for column in counts]
        extra = [[r[i] for r in answer] for i in range(n + 1 + width, len(selected))]

        def table(columns: list[list[Any]], kinds: list[str]) -> Any:
            frame = pd.DataFrame({i: pd.Series(values, index=index, dtype=_dtype(k))
                                  for i, (values, k) in enumerate(zip(columns, kinds))},
                                 index=index)
            frame.columns = pd.Index(labels)
            frame = frame.sort_index()
            return frame.iloc[:, 0].rename(labels[0]) if rows.series else frame

        def shown(column: list[Any], i: int, empty: Any) -> list[Any]:
            return [empty if h else (v or empty) for v, h in zip(column, hidden[i])]

        if kind == "groupby_size":
            size = pd.Series([r[n] for r in answer], index=index, dtype="int64").sort_index()
            return {"size": size.rename(labels[0]) if rows.series else size}
        count = table([shown(c, i, 0) for i, c in enumerate(counts)], ["int"] * width)
        if kind == "groupby_count":
            return {"count": count}
        if spread:
            return {"squares": table([shown(extra[3 * i], i, 0.0) for i in range(width)],
                                     ["float"] * width),
                    "deviations": table([shown(extra[3 * i + 1], i, 0.0) for i in range(width)],
                                        ["float"] * width),
                    "count": table([shown(extra[3 * i + 2], i, 0) for i in range(width)],
                                   ["int"] * width)}
        kinds = ["float" if any(hidden[i]) else _sum_kind(c)
                 for i, (_, c) in enumerate(rows.columns)]
        total = table([shown(extra[i], i, 0) for i in range(width)], kinds)
        return {"sum": total} if kind == "groupby_sum" else {"sum": total, "count": count}

    def _centred(self, keys: list[tuple[Any, Column]], labels: list[Any], series: bool,
                 mean: Any) -> tuple[Any, list[Any]]:
        """The table joined to each key's mean of the previous step (bound as a VALUES list),
        and each column's mean per row: NULL where the key has none, as pandas' NaN."""
        sa = self.sa
        means = mean.to_frame() if series and isinstance(mean, pd.Series) else mean
        if not isinstance(means, pd.DataFrame) or means.index.nlevels != len(keys) or \
                means.shape[1] != len(labels) or (not series and list(means.columns) != labels):
            raise NotMapped("means per key that do not match the groups")
        if means.empty:
            return self.source, [sa.cast(sa.null(), sa.Double)] * len(labels)
        if means.size + means.shape[0] * len(keys) > _MOST_PARAMETERS:
            raise NotMapped("too many groups to send their means as parameters")
        rows = [tuple(_key_value(v, key.kind) for v, (_, key) in
                      zip(k if isinstance(k, tuple) else (k,), keys)) +
                tuple(_centre(m) for m in values)
                for k, values in zip(means.index, means.itertuples(index=False))]
        names = [f"k{i}" for i in range(len(keys))] + [f"m{i}" for i in range(len(labels))]
        table = sa.values(*[sa.column(name) for name in names], name="centres").data(rows)
        types = {"int": sa.BigInteger, "text": sa.Text, "bool": sa.Boolean}
        joined = self.source.outerjoin(table, sa.and_(*[
            key.expr == sa.cast(table.c[f"k{i}"], types[key.kind])
            for i, (_, key) in enumerate(keys)]))
        return joined, [sa.cast(table.c[f"m{i}"], sa.Double) for i in range(len(labels))]

    def _histogram(self, rows: Rows, bins: list[float], declared: Any) -> dict[str, Any]:
        """numpy.histogram's counts per bin [e_i, e_i+1), the last closed, as a CASE (for
        finite edges in order); the SDK declares every bin."""
        sa = self.sa
        if not (len(bins) >= 2 and all(isinstance(_constant(e), (int, float)) for e in bins)
                and list(bins) == sorted(bins)):
            raise NotMapped("a histogram of edges that are not finite numbers in order")
        x = sa.cast(_number(rows.only()), sa.Double)
        edges = [sa.literal(float(e), sa.Double) for e in bins]
        last = len(bins) - 2
        code = sa.case(*[(sa.and_(x >= edges[i], x < edges[i + 1]), i) for i in range(last + 1)],
                       (x == edges[-1], last), else_=-1)
        return self._per_key("groupby_size", rows, [(None, Column(code, "int"))], declared)


def _key_index(values: list[tuple[Any, ...]], keys: list[tuple[Any, Column]]) -> pd.Index:
    """The groups' keys as pandas labels them: an Index, or a MultiIndex for several keys."""
    levels = [pd.Index([v[i] for v in values], dtype=_KEY_DTYPES[key.kind], name=label)
              for i, (label, key) in enumerate(keys)]
    return levels[0] if len(levels) == 1 else pd.MultiIndex.from_arrays(levels)


def _centre(mean: Any) -> float | None:
    """A mean of the previous step as a bind parameter: None where it is missing."""
    if isinstance(mean, (float, np.floating)) and math.isnan(mean):
        return None
    number = _constant(mean)
    if not isinstance(number, (int, float)) or isinstance(number, bool):
        raise NotMapped("a mean that is not a number")
    return float(number)


def _key_value(value: Any, kind: str) -> Any:
    """A key (of the previous step's means, or declared) as a bind parameter of the key
    column's type; other types (a float key of another holder's) do not map."""
    if kind == "bool" and isinstance(value, (bool, np.bool_)):
        return bool(value)
    if kind == "int" and isinstance(value, (int, np.integer)) and not isinstance(
            value, (bool, np.bool_)):
        return int(value)
    if kind == "text" and isinstance(value, str):
        return value
    raise NotMapped("a key of another type than the key column's")


def _constant(value: Any) -> Any:
    """A number of the task (a constant, or an aggregate sent for this step): it travels as a
    bind parameter. NaN, infinities and everything else do not map."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and -2**63 <= int(value) < 2**63:
        return int(value)
    if isinstance(value, (float, np.floating)) and math.isfinite(value):
        return float(value)
    if isinstance(value, (list, tuple, str)) or value is None:
        return value  # a key of getitem or drop
    raise NotMapped(f"a constant of type {type(value).__name__}")


def _select(rows: Any, key: Any) -> Rows:
    if not isinstance(rows, Rows) or rows.series:
        raise NotMapped("selecting from a Series")
    columns = dict(rows.columns)
    wanted = list(key) if isinstance(key, (list, tuple)) else [key]
    if any(k not in columns for k in wanted):
        raise NotMapped("a column the table does not have")  # pandas' path says which
    return replace(rows, columns=tuple((k, columns[k]) for k in wanted),
                   series=not isinstance(key, (list, tuple)))


def _side_by_side(args: list[Any], names: list[Any] | None) -> Rows:
    """Series of the same rows as the columns of a frame, named after them (or `names`)."""
    if not all(isinstance(a, Rows) and a.series and a.filters == args[0].filters for a in args):
        raise NotMapped("columns of rows that do not line up")
    labels = list(names) if names is not None else [a.columns[0][0] for a in args]
    if None in labels or len(set(labels)) != len(labels):
        raise NotMapped("columns without a name, or with the same one")  # pandas numbers them
    return Rows(tuple((label, a.only()) for label, a in zip(labels, args)), series=False,
                filters=args[0].filters)


def _per_column(rows: Any, apply: Any) -> Rows:
    if not isinstance(rows, Rows):
        raise NotMapped("an operation on aggregates")
    return replace(rows, columns=tuple((label, apply(c)) for label, c in rows.columns))


def _number(column: Column, count_only: bool = False) -> Any:
    """A column's values as numbers (a mask's as 0 and 1, as pandas sums bools)."""
    import sqlalchemy as sa
    if column.kind in ("int", "float"):
        return column.expr
    if column.kind == "bool":
        return sa.case((column.expr, 1), else_=0)
    raise NotMapped(f"arithmetic on a {column.kind} column")


def _sum_kind(column: Column) -> str:
    return "float" if column.kind == "float" else "int"


def _dtype(kind: str) -> str:
    return "float64" if kind == "float" else "int64"


def _at(aggregate: Any, label: Any) -> Any:
    if not isinstance(aggregate, pd.Series) or label not in aggregate.index:
        raise NotMapped("a per-column aggregate that does not match the columns")
    return aggregate[label]


def _shaped(rows: Rows, labels: list[Any], numbers: list[Any], kinds: list[str]) -> Any:
    """One part as pandas gives it: a scalar for a Series, a Series by column for a frame."""
    values = [np.float64(n or 0.0) if k == "float" else np.int64(int(n or 0))
              for n, k in zip(numbers, kinds)]
    if rows.series:
        return values[0]
    dtype = np.result_type(*[_dtype(k) for k in kinds]) if kinds else np.dtype("int64")
    return pd.Series(values, index=pd.Index(labels), dtype=dtype)
