"""The lazy, federated subset of pandas that `execute()` is written with.

`execute()` runs once, at `build()` time, on these proxies: each operation records a node of the
task's graph instead of computing anything. What cannot be federated is refused right there, with
the operation's name and the reason.
"""

from __future__ import annotations

from typing import Any

from sdk.analytics.graph import Graph


class UnsupportedOperation(TypeError):
    """An operation that deltaflow cannot run federated, raised at `build()`."""


_ROWS_REASON = "it would need rows from every holder in one place, and rows never leave a holder"
_REFUSED = {
    "median": "a median is not a sum of per-holder parts; " + _ROWS_REASON,
    "quantile": "a quantile is not a sum of per-holder parts; " + _ROWS_REASON,
    "mode": _ROWS_REASON,
    "iloc": "row positions mean nothing across holders; " + _ROWS_REASON,
    "loc": _ROWS_REASON,
    "head": _ROWS_REASON,
    "tail": _ROWS_REASON,
    "sample": _ROWS_REASON,
    "sort_values": _ROWS_REASON,
    "apply": "it would run arbitrary code on the holders; use column arithmetic instead",
    "map": "it would run arbitrary code on the holders; use column arithmetic instead",
    "to_numpy": _ROWS_REASON,
    "values": _ROWS_REASON,
    "to_list": _ROWS_REASON,
    "tolist": _ROWS_REASON,
}


def refuse(operation: str, reason: str | None = None) -> UnsupportedOperation:
    return UnsupportedOperation(
        f"{operation} is not supported in a federated task: {reason or _REFUSED.get(operation, _ROWS_REASON)}"
    )


class _Lazy:
    """A value that `execute()` holds: a node of the graph being recorded."""

    def __init__(self, graph: Graph, node: int, rows: bool) -> None:
        self._graph = graph
        self._node = node
        self._rows = rows  # row-wise (on the holders) rather than an aggregate

    def _new(self, cls: type[_Lazy], operation: str, *others: Any, **params: Any) -> Any:
        inputs = (self._node, *(_node_of(self._graph, o) for o in others))
        rows = operation != "reduce" and (
            self._rows or any(getattr(o, "_rows", False) for o in others))
        return cls(self._graph, self._graph.add(operation, inputs, **params), rows)

    def _binary(self, op: str, other: Any, reflected: bool = False) -> Any:
        result_type = type(other) if isinstance(other, DataFrame) else type(self)
        if not reflected:
            return self._new(result_type, "binary", other, op=op)
        left = _node_of(self._graph, other)
        node = self._graph.add("binary", (left, self._node), op=op)
        return result_type(self._graph, node, self._rows or getattr(other, "_rows", False))

    def _reduce(self, kind: str, result: type[_Lazy], **params: Any) -> Any:
        return self._new(result, "reduce", kind=kind, **params)

    def __add__(self, other: Any) -> Any: return self._binary("add", other)
    def __radd__(self, other: Any) -> Any: return self._binary("add", other, True)
    def __sub__(self, other: Any) -> Any: return self._binary("sub", other)
    def __rsub__(self, other: Any) -> Any: return self._binary("sub", other, True)
    def __mul__(self, other: Any) -> Any: return self._binary("mul", other)
    def __rmul__(self, other: Any) -> Any: return self._binary("mul", other, True)
    def __truediv__(self, other: Any) -> Any: return self._binary("truediv", other)
    def __rtruediv__(self, other: Any) -> Any: return self._binary("truediv", other, True)
    def __floordiv__(self, other: Any) -> Any: return self._binary("floordiv", other)
    def __rfloordiv__(self, other: Any) -> Any: return self._binary("floordiv", other, True)
    def __mod__(self, other: Any) -> Any: return self._binary("mod", other)
    def __rmod__(self, other: Any) -> Any: return self._binary("mod", other, True)
    def __pow__(self, other: Any) -> Any: return self._binary("pow", other)
    def __rpow__(self, other: Any) -> Any: return self._binary("pow", other, True)
    def __lt__(self, other: Any) -> Any: return self._binary("lt", other)
    def __le__(self, other: Any) -> Any: return self._binary("le", other)
    def __gt__(self, other: Any) -> Any: return self._binary("gt", other)
    def __ge__(self, other: Any) -> Any: return self._binary("ge", other)
    def __eq__(self, other: Any) -> Any: return self._binary("eq", other)  # type: ignore[override]
    def __ne__(self, other: Any) -> Any: return self._binary("ne", other)  # type: ignore[override]
    def __and__(self, other: Any) -> Any: return self._binary("and", other)
    def __rand__(self, other: Any) -> Any: return self._binary("and", other, True)
    def __or__(self, other: Any) -> Any: return self._binary("or", other)
    def __ror__(self, other: Any) -> Any: return self._binary("or", other, True)
    def __xor__(self, other: Any) -> Any: return self._binary("xor", other)
    def __rxor__(self, other: Any) -> Any: return self._binary("xor", other, True)
    def __neg__(self) -> Any: return self._new(type(self), "unary", op="neg")
    def __pos__(self) -> Any: return self._new(type(self), "unary", op="pos")
    def __abs__(self) -> Any: return self._new(type(self), "unary", op="abs")
    def __invert__(self) -> Any: return self._new(type(self), "unary", op="invert")

    __hash__ = None  # type: ignore[assignment]

    def abs(self) -> Any:
        return abs(self)

    def isna(self) -> Any:
        return self._new(type(self), "unary", op="isna")

    def notna(self) -> Any:
        return self._new(type(self), "unary", op="notna")

    isnull = isna
    notnull = notna

    def __bool__(self) -> bool:
        raise refuse("truth testing (if/and/or on a federated value)",
                     "its value is known only when the task runs; use & | ~ for row-wise logic")

    def __iter__(self) -> Any:
        raise refuse("iteration", _ROWS_REASON)

    def __len__(self) -> int:
        raise refuse("len()", "the number of rows is known only when the task runs; use count()")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in _REFUSED:
            raise refuse(name)
        raise refuse(name, "deltaflow's pandas does not have it (see the README's table of the API)")


class Series(_Lazy):
    """A lazy pandas Series: a column of every holder's rows, or an aggregate."""

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, _Lazy):
            return self._new(Series, "filter", key)
        if self._rows:
            raise refuse("selecting rows by label", "row labels mean nothing across holders")
        return self._new(Scalar, "getitem", key=key)

    def sum(self, skipna: bool = True) -> Scalar:
        return self._reduce("sum", Scalar, skipna=skipna)

    def count(self) -> Scalar:
        return self._reduce("count", Scalar)

    def mean(self, skipna: bool = True) -> Scalar:
        return self._reduce("mean", Scalar, skipna=skipna)


class DataFrame(_Lazy):
    """A lazy pandas DataFrame: every holder's rows, as if stacked."""

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, _Lazy):
            return self._new(DataFrame, "filter", key)
        if isinstance(key, list):
            return self._new(DataFrame, "getitem", key=key)
        return self._new(Series, "getitem", key=key)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in _REFUSED:
            return super().__getattr__(name)
        return self[name]

    def sum(self, skipna: bool = True, numeric_only: bool = False) -> Series:
        return self._reduce("sum", Series, skipna=skipna, numeric_only=numeric_only)

    def count(self, numeric_only: bool = False) -> Series:
        return self._reduce("count", Series, numeric_only=numeric_only)

    def mean(self, skipna: bool = True, numeric_only: bool = False) -> Series:
        return self._reduce("mean", Series, skipna=skipna, numeric_only=numeric_only)


class Scalar(_Lazy):
    """A lazy aggregate scalar: known on the coordinator once its round is done."""


def _node_of(graph: Graph, value: Any) -> int:
    """The node of a lazy value, or a new constant node for a plain one."""
    if isinstance(value, _Lazy):
        if value._graph is not graph:
            raise ValueError("values from two different tasks cannot be combined")
        return value._node
    return graph.add("const", value=value)
