"""What each operation of an analytics graph does, in pandas.

Row-wise operations run on a worker over its own rows. Reductions are split in two: `partial`
runs on each worker and returns additive parts (sums, counts); `finalize` runs on the coordinator
over the parts added up across workers. Only those parts ever leave a worker.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd

BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "truediv": operator.truediv,
    "floordiv": operator.floordiv,
    "mod": operator.mod,
    "pow": operator.pow,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
    "eq": operator.eq,
    "ne": operator.ne,
    "and": operator.and_,
    "or": operator.or_,
    "xor": operator.xor,
}

UNARY: dict[str, Callable[[Any], Any]] = {
    "neg": operator.neg,
    "pos": operator.pos,
    "abs": abs,
    "invert": operator.invert,
    "isna": pd.isna,
    "notna": pd.notna,
}


def _numeric(obj: Any, numeric_only: bool) -> Any:
    if isinstance(obj, pd.DataFrame) and numeric_only:
        return obj.select_dtypes(include=["number", "bool"])
    return obj


def _count(obj: Any, skipna: bool) -> Any:
    """Non-missing values per column, or every row when missing values are not skipped."""
    if skipna:
        return obj.count()
    if isinstance(obj, pd.DataFrame):
        return pd.Series(len(obj), index=obj.columns, dtype="int64")
    return len(obj)


def _require_numeric(obj: Any, reduction: str) -> None:
    if isinstance(obj, pd.DataFrame):
        bad = [c for c, dtype in obj.dtypes.items() if not _is_numeric(dtype)]
        if bad:
            raise TypeError(
                f"{reduction}() needs numeric columns, and {bad} are not; select numeric columns "
                f"or pass numeric_only=True"
            )
    elif not _is_numeric(obj.dtype):
        raise TypeError(f"{reduction}() needs a numeric Series, and {obj.name!r} is {obj.dtype}")


def _is_numeric(dtype: Any) -> bool:
    return pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)


def _sum_partial(obj: Any, skipna: bool = True, numeric_only: bool = False) -> dict[str, Any]:
    return {"sum": _numeric(obj, numeric_only).sum(skipna=skipna)}


def _count_partial(obj: Any, numeric_only: bool = False) -> dict[str, Any]:
    return {"count": _numeric(obj, numeric_only).count()}


def _mean_partial(obj: Any, skipna: bool = True, numeric_only: bool = False) -> dict[str, Any]:
    data = _numeric(obj, numeric_only)
    _require_numeric(data, "mean")
    return {"sum": data.sum(skipna=skipna), "count": _count(data, skipna)}


@dataclass(frozen=True)
class Reduction:
    partial: Callable[..., dict[str, Any]]
    finalize: Callable[..., Any]


REDUCTIONS: dict[str, Reduction] = {
    "sum": Reduction(_sum_partial, lambda parts, **_: parts["sum"]),
    "count": Reduction(_count_partial, lambda parts, **_: parts["count"]),
    "mean": Reduction(_mean_partial, lambda parts, **_: parts["sum"] / parts["count"]),
}


def add_parts(left: Any, right: Any) -> Any:
    """The sum of two workers' parts, aligned on labels where they are pandas objects."""
    if isinstance(left, (pd.Series, pd.DataFrame)):
        return left.add(right, fill_value=0)
    return left + right


def apply_row_op(op: str, params: dict[str, Any], args: list[Any]) -> Any:
    """Evaluates one non-reducing operation on pandas objects or aggregate values."""
    if op == "const":
        return params["value"]
    if op == "getitem":
        key = params["key"]
        return args[0][list(key) if isinstance(key, (list, tuple)) else key]
    if op == "filter":
        return args[0][args[1]]
    if op == "binary":
        return BINARY[params["op"]](args[0], args[1])
    if op == "unary":
        return UNARY[params["op"]](args[0])
    raise ValueError(f"unknown operation {op!r}")


def reduce_locally(params: dict[str, Any], value: Any) -> Any:
    """A reduction of an aggregate value, on the coordinator: plain pandas."""
    kind = params["kind"]
    kwargs = {k: v for k, v in params.items() if k != "kind"}
    return getattr(value, kind)(**kwargs)


KNOWN_OPS = {"source", "const", "getitem", "filter", "binary", "unary", "reduce"}
