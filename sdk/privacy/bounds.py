"""The bounds an analytics graph declares on its values, read from the graph itself.

Under differential privacy every released number needs a sensitivity: how much one row can move
it. A sum's comes from a bound on the values summed, which the graph declares with `clip`,
`between` (as a value or as a filter), comparisons and other booleans, `isin`,
`astype(bool)`, `fillna`, and arithmetic on bounded values and constants. Anything else is
unbounded. The worker reads the bounds from the signed graph itself, never from a claim of the
task's: the SDK and every worker compute the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sdk.analytics.graph import Graph, Node


@dataclass(frozen=True)
class Interval:
    """Every value lies in [low, high] (missing values aside); an end may be infinite where
    a filter bounds one side only, until another bounds the other."""

    low: float
    high: float

    @property
    def finite(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    @property
    def magnitude(self) -> float:
        return max(abs(self.low), abs(self.high))

    @property
    def width(self) -> float:
        return self.high - self.low

    def clamp(self, value: float) -> float:
        return min(max(value, self.low), self.high)


UNIT = Interval(0.0, 1.0)  # booleans


@dataclass(frozen=True)
class Frame:
    """A DataFrame's bounds: per column, else `default` (a bound every column has, such as
    after `frame.clip(0, 1)`); `columns` is the column names where the graph names them all
    (after select_dtypes, those it may keep: the worker reports the others as 0)."""

    columns: tuple[str, ...] | None = None
    bounds: dict[str, Interval | None] = field(default_factory=dict)
    default: Interval | None = None

    def column(self, name: Any) -> Interval | None:
        return self.bounds.get(name, self.default)

    def map(self, change: Any) -> Frame:
        """The bounds after an element-wise `change(Interval | None) -> Interval | None`."""
        return Frame(self.columns, {k: change(v) for k, v in self.bounds.items()},
                     change(self.default))


Bound = Interval | Frame | None


def _interval(low: float, high: float) -> Interval | None:
    if math.isfinite(low) and math.isfinite(high) and low <= high:
        return Interval(float(low), float(high))
    return None


def _constant(value: Any) -> Interval | None:
    if isinstance(value, bool):
        return Interval(float(value), float(value))
    if isinstance(value, (int, float)) and math.isfinite(value):
        return Interval(float(value), float(value))
    return None


def _arithmetic(op: str, a: Interval | None, b: Interval | None) -> Interval | None:
    """The bound of `a op b` for the arithmetic that keeps bounds."""
    if a is None or b is None:
        return None
    if op == "add":
        return _interval(a.low + b.low, a.high + b.high)
    if op == "sub":
        return _interval(a.low - b.high, a.high - b.low)
    if op == "mul":
        products = [a.low * b.low, a.low * b.high, a.high * b.low, a.high * b.high]
        return _interval(min(products), max(products))
    if op == "truediv" and b.low == b.high and b.low != 0:
        return _arithmetic("mul", a, Interval(1 / b.low, 1 / b.low))
    if op == "mod" and b.low == b.high and b.low > 0:
        return Interval(0.0, b.low)
    if op == "pow" and b.low == b.high and float(b.low).is_integer() and 0 <= b.low <= 8:
        k = int(b.low)
        try:
            ends = [a.low**k, a.high**k]
        except OverflowError:
            return None
        low = 0.0 if k % 2 == 0 and a.low <= 0 <= a.high else min(ends)
        return _interval(low, max(ends))
    if op in ("and", "or", "xor") and _within(a, UNIT) and _within(b, UNIT):
        return UNIT
    return None


def _within(a: Interval, b: Interval) -> bool:
    return b.low <= a.low and a.high <= b.high


_COMPARISONS = {"lt", "le", "gt", "ge", "eq", "ne"}
_MONOTONE = {"sqrt": (math.sqrt, 0.0), "exp": (math.exp, -math.inf),
             "log": (math.log, 0.0), "log10": (math.log10, 0.0), "log1p": (math.log1p, -1.0)}


def _unary(op: str, a: Interval | None) -> Interval | None:
    if op in ("isna", "notna"):
        return UNIT
    if a is None:
        return None
    if op == "neg":
        return Interval(-a.high, -a.low)
    if op == "pos":
        return a
    if op == "abs":
        low = 0.0 if a.low <= 0 <= a.high else min(abs(a.low), abs(a.high))
        return Interval(low, a.magnitude)
    if op == "invert":  # ~ of a bool is a bool, of an integer -x - 1
        return _interval(min(-a.high - 1, 0.0), max(-a.low, 1.0))
    if op in _MONOTONE:
        function, above = _MONOTONE[op]
        if a.low > above or (op in ("sqrt", "exp") and a.low >= above):
            try:
                return _interval(function(a.low), function(a.high))
            except (OverflowError, ValueError):
                return None
    return None


def _clip(a: Interval | None, lower: Any, upper: Any) -> Interval | None:
    """The bound after clip(lower, upper) (pandas swaps them where lower > upper); an end stays
    infinite where neither the values nor the clip bound it."""
    low, high = _constant(lower), _constant(upper)
    if low is not None and high is not None and low.low > high.high:
        low, high = high, low
    a = a or Interval(-math.inf, math.inf)
    if low is not None:
        a = Interval(max(a.low, low.low), max(a.high, low.low))
    if high is not None:
        a = Interval(min(a.low, high.high), min(a.high, high.high))
    return a


def _cast(a: Interval | None, dtype: Any) -> Interval | None:
    """The bound after astype(dtype): integers truncate, and wrap where they do not fit the
    type; a narrower float rounds, or overflows to infinity."""
    name = str(dtype).lower()
    if name in ("bool", "boolean"):
        return UNIT
    if a is None or not name.startswith(("int", "uint", "float")):
        return None
    try:
        kind = np.dtype(name)
    except TypeError:
        return None
    if kind.kind in "iu":
        info = np.iinfo(kind)
        if info.min <= a.low and a.high <= info.max:
            return _interval(math.floor(a.low), math.ceil(a.high))
        return Interval(float(info.min), float(info.max))
    if kind == np.float64:
        return a
    info = np.finfo(kind)
    if a.magnitude >= float(info.max):
        return None
    slack = a.magnitude * float(info.eps)
    return _interval(a.low - slack, a.high + slack)


def bounds_of(graph: Graph, row_wise: set[int]) -> dict[int, Bound]:
    """The bound of every row-wise node (an Interval for a Series, a Frame for a DataFrame);
    aggregates are unbounded here."""
    bounds: dict[int, Bound] = {}
    for node in graph.nodes:
        if node.op == "source":
            bounds[node.id] = Frame()
        elif node.op == "const":
            bounds[node.id] = _constant(node.params.get("value"))
        elif node.id in row_wise:
            bounds[node.id] = _row_bound(graph, node, [bounds.get(i) for i in node.inputs],
                                         bounds)
        else:
            bounds[node.id] = None
    return bounds


def _elementwise(change: Any, *operands: Bound) -> Bound:
    """`change` applied to intervals, column by column where an operand is a Frame."""
    frames = [o for o in operands if isinstance(o, Frame)]
    if len(frames) > 1:
        return None
    if frames:
        frame = frames[0]
        return frame.map(lambda column: change(*[column if o is frame else o
                                                 for o in operands]))
    return change(*operands)


def _row_bound(graph: Graph, node: Node, inputs: list[Bound], bounds: dict[int, Bound]) -> Bound:
    op, params = node.op, node.params
    if op == "getitem":
        data, key = inputs[0], params["key"]
        if not isinstance(data, Frame):
            return None
        if isinstance(key, (list, tuple)):
            return Frame(tuple(key), {k: data.column(k) for k in key})
        return data.column(key)
    if op == "filter":
        return _filtered(graph, node, inputs[0], bounds)
    if op == "binary":
        if params["op"] in _COMPARISONS:
            return _elementwise(lambda *_: UNIT, *inputs)
        return _elementwise(lambda a, b: _arithmetic(params["op"], a, b), *inputs)
    if op == "unary":
        return _elementwise(lambda a: _unary(params["op"], a), inputs[0])
    if op == "method":
        return _method(params["name"], dict(zip(params["keywords"], node.inputs[1:])), graph,
                       inputs[0], bounds)
    return None


def _const_value(graph: Graph, node_id: int) -> Any:
    node = graph[node_id]
    return node.params.get("value") if node.op == "const" else None


def _method(name: str, arguments: dict[str, int], graph: Graph, data: Bound,
            bounds: dict[int, Bound]) -> Bound:
    value = {k: _const_value(graph, i) for k, i in arguments.items()}
    if name in ("isin", "between", "notna", "isna"):
        return _elementwise(lambda _: UNIT, data)
    if name == "clip":
        if any(graph[i].op != "const" for i in arguments.values()):
            return None  # clip(upper=d.other) may move values as far as the other goes
        return _elementwise(lambda a: _clip(a, value.get("lower"), value.get("upper")), data)
    if name == "astype":
        dtype = value.get("dtype")
        if isinstance(dtype, dict):
            if not isinstance(data, Frame):
                return None
            return Frame(data.columns, {**data.bounds, **{
                k: _cast(data.column(k), v) for k, v in dtype.items()}}, None)
        return _elementwise(lambda a: _cast(a, dtype), data)
    if name == "fillna":
        fill = _constant(value.get("value"))
        return _elementwise(lambda a: None if a is None or fill is None else
                            Interval(min(a.low, fill.low), max(a.high, fill.high)), data)
    if name == "round":
        decimals = value.get("decimals") or 0
        half = 0.5 * 10.0 ** -decimals if isinstance(decimals, int) else math.inf
        return _elementwise(lambda a: None if a is None else
                            _interval(a.low - half, a.high + half), data)
    if not isinstance(data, Frame):
        return None
    if name == "select_dtypes":  # some of the columns: a release for each of them all
        return data
    if name == "drop":
        dropped = value.get("columns")
        dropped = [dropped] if isinstance(dropped, str) else list(dropped or [])
        columns = None if data.columns is None else tuple(
            c for c in data.columns if c not in dropped)
        return Frame(columns, {k: v for k, v in data.bounds.items() if k not in dropped},
                     data.default)
    if name == "assign":
        new = {k: bounds.get(i) if i in bounds else _constant(_const_value(graph, i))
               for k, i in arguments.items()}
        new = {k: v if isinstance(v, Interval) or v is None else None for k, v in new.items()}
        columns = None if data.columns is None else data.columns + tuple(
            k for k in new if k not in data.columns)
        return Frame(columns, {**data.bounds, **new}, data.default)
    return None


def _filtered(graph: Graph, node: Node, data: Bound, bounds: dict[int, Bound]) -> Bound:
    """The bound of `data[mask]`: the data's, narrowed where the mask bounds a column of the
    same rows (`d[d.x.between(a, b)]`, `d[(d.x >= a) & (d.x < b)]`)."""
    for column, interval in _mask_limits(graph, graph[node.inputs[1]], node.inputs[0]):
        if isinstance(data, Frame):
            old = data.column(column)
            narrowed = interval if old is None else _interval(max(old.low, interval.low),
                                                              min(old.high, interval.high))
            columns = data.columns
            data = Frame(columns, {**data.bounds, column: narrowed}, data.default)
        elif column is None:
            data = interval if data is None else _interval(max(data.low, interval.low),
                                                           min(data.high, interval.high))
    return data


def _mask_limits(graph: Graph, mask: Node, data_id: int) -> list[tuple[Any, Interval]]:
    """(column, interval) pairs that every row the mask keeps lies in; column None when the
    mask tests the filtered Series itself."""
    if mask.op == "binary" and mask.params["op"] == "and":
        return [pair for i in mask.inputs for pair in _mask_limits(graph, graph[i], data_id)]
    if mask.op == "method" and mask.params["name"] == "between":
        arguments = dict(zip(mask.params["keywords"], mask.inputs[1:]))
        low = _constant(_const_value(graph, arguments["left"]))
        high = _constant(_const_value(graph, arguments["right"]))
        column = _column_tested(graph, mask.inputs[0], data_id)
        if low is not None and high is not None and column is not _NOT_OURS:
            interval = _interval(low.low, high.high)
            return [(column, interval)] if interval else []
    if mask.op == "binary" and mask.params["op"] in ("lt", "le", "gt", "ge"):
        left, right = mask.inputs
        value, tested, op = _const_value(graph, right), left, mask.params["op"]
        if graph[left].op == "const":
            value, tested = _const_value(graph, left), right
            op = {"lt": "gt", "le": "ge", "gt": "lt", "ge": "le"}[op]
        limit, column = _constant(value), _column_tested(graph, tested, data_id)
        if limit is not None and column is not _NOT_OURS:
            interval = (Interval(-math.inf, limit.low) if op in ("lt", "le")
                        else Interval(limit.low, math.inf))
            return [(column, interval)]
    return []


_NOT_OURS = object()


def _column_tested(graph: Graph, node_id: int, data_id: int) -> Any:
    """The column of the filtered data that node `node_id` is (None: the data itself, which
    `d.x[d.x > 0]` records as a second node taking the same column)."""
    node, data = graph[node_id], graph[data_id]
    if node_id == data_id or (node.op == data.op == "getitem" and node.inputs == data.inputs
                              and node.params == data.params):
        return None
    if node.op == "getitem" and node.inputs == (data_id,) and isinstance(node.params["key"],
                                                                          (str, int)):
        return node.params["key"]
    return _NOT_OURS
