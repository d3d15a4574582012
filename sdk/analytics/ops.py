"""What each operation of an analytics graph does, in pandas.

Row-wise operations run on a worker over its own rows. Reductions are split in two: `partial`
runs on each worker and returns additive parts, each a sum over rows (sums, counts, sums of
squared deviations); `finalize` runs on the coordinator over the parts added up across workers.
Only those parts ever leave a worker. A grouped reduction (`groupby_*`) sends the same parts per
key; label-aligned addition gives the union of every holder's keys.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from sdk.analytics import order
from sdk.analytics.errors import EvaluationError
from sdk.analytics.graph import Node
from sdk.analytics.shapes import combine

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
    "sqrt": np.sqrt,
    "exp": np.exp,
    "log": np.log,
    "log10": np.log10,
    "log1p": np.log1p,
}

# pandas methods a graph may call, with keyword arguments only: each is element-wise or picks
# columns, so it neither moves rows nor runs code of the submitter's.
METHODS = frozenset({"fillna", "astype", "isin", "between", "clip", "round", "select_dtypes",
                     "drop", "assign"})

# The group key of each row (a Series, or a DataFrame of several keys), or None for a reduction
# over all rows.
Keys = pd.Series | pd.DataFrame | None


def by(keys: pd.Series | pd.DataFrame) -> Any:
    """What pandas' groupby takes for `keys`: the Series, or the list of a DataFrame's columns
    (a group per distinct tuple, rows with a missing key in none, as pandas' defaults)."""
    if isinstance(keys, pd.DataFrame):
        return [keys.iloc[:, i] for i in range(keys.shape[1])]
    return keys


def key_index(keys: pd.Series | pd.DataFrame) -> pd.Index:
    """Each row's key as an Index: a MultiIndex for several keys."""
    if isinstance(keys, pd.DataFrame):
        return pd.MultiIndex.from_arrays(by(keys), names=list(keys.columns))
    return pd.Index(keys)


def key_sizes(keys: pd.Series | pd.DataFrame) -> pd.Series:
    """How many rows each key has (missing keys left out)."""
    return pd.Series(0, index=keys.index).groupby(by(keys)).size()


def per_row(table: pd.Series | pd.DataFrame, keys: pd.Series | pd.DataFrame) -> Any:
    """`table`'s value (row) at each row's key, missing where it has none, on the rows' index."""
    return table.reindex(key_index(keys)).set_axis(keys.index)


def _select(data: Any, numeric_only: bool) -> Any:
    if isinstance(data, pd.DataFrame) and numeric_only:
        return data.select_dtypes(include=["number", "bool"])
    return data


def _numeric(data: Any, numeric_only: bool, reduction: str) -> Any:
    """The numeric (and bool) values to reduce; text is refused, as its sum would be its rows."""
    data = _select(data, numeric_only)
    if isinstance(data, pd.DataFrame):
        bad = [c for c, dtype in data.dtypes.items() if not _is_numeric(dtype)]
        if bad:
            raise EvaluationError(
                f"{reduction} needs numeric columns, and {bad} are not; select numeric columns "
                f"or pass numeric_only=True"
            )
    elif not _is_numeric(data.dtype):
        raise EvaluationError(f"{reduction} needs a numeric Series, and {data.name!r} is "
                              f"{data.dtype}")
    return data


def _is_numeric(dtype: Any) -> bool:
    return pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)


def _total(data: Any, keys: Keys, skipna: bool = True) -> Any:
    """The sum over rows, or per key (where missing values are always skipped, as by default)."""
    if keys is None:
        return data.sum(skipna=skipna)
    return data.groupby(by(keys)).sum()


def _count(data: Any, keys: Keys, skipna: bool = True) -> Any:
    """Non-missing values over rows or per key; every row when missing values are not skipped."""
    if keys is not None:
        return data.groupby(by(keys)).count()
    if skipna:
        return data.count()
    if isinstance(data, pd.DataFrame):
        return pd.Series(len(data), index=data.columns, dtype="int64")
    return np.int64(len(data))


def _count_parts(data: Any, keys: Keys, numeric_only: bool = False) -> dict[str, Any]:
    return {"count": _count(_select(data, numeric_only), keys)}


def _sum_parts(data: Any, keys: Keys, skipna: bool = True,
               numeric_only: bool = False) -> dict[str, Any]:
    return {"sum": _total(_numeric(data, numeric_only, "sum()"), keys, skipna)}


def _mean_parts(data: Any, keys: Keys, skipna: bool = True,
                numeric_only: bool = False) -> dict[str, Any]:
    data = _numeric(data, numeric_only, "mean()")
    return {"sum": _total(data, keys, skipna), "count": _count(data, keys, skipna)}


def _spread_parts(data: Any, keys: Keys, mean: Any, ddof: int = 1, skipna: bool = True,
                  numeric_only: bool = False) -> dict[str, Any]:
    """Sums of deviations from the mean of every holder's rows (per key when grouped).

    Deviations from the global mean are small where the values are large and close together, so
    the variance computed from them does not cancel the way sum(x**2) - sum(x)**2 / n would.
    """
    data = _numeric(data, numeric_only, "var(), std() and sem()")
    centre = mean if keys is None else per_row(mean, keys)
    deviation = data - centre
    return {
        "squares": _total(deviation**2, keys, skipna),
        "deviations": _total(deviation, keys, skipna),
        "count": _count(deviation, keys, skipna),
    }


def size_parts(data: Any, keys: pd.Series | pd.DataFrame) -> dict[str, Any]:
    return {"size": data.groupby(by(keys)).size()}


def _truth_parts(want: bool) -> Callable[..., dict[str, Any]]:
    """all/any: how many values are falsy (for all) or truthy (for any); NaN is truthy unskipped."""

    def parts(data: Any, skipna: bool = True, bool_only: bool = False) -> dict[str, Any]:
        if bool_only and isinstance(data, pd.DataFrame):
            data = data.select_dtypes(include=["bool"])
        truthy = data.ne(0)  # nullable columns give <NA> where a value is missing
        truthy = truthy.where(data.notna(), not want) if skipna else truthy.fillna(True)
        return {"matches": (truthy.astype(bool) == want).sum()}

    return parts


def _describe_parts(data: Any, mean: Any, **_: Any) -> dict[str, Any]:
    """count, sum and deviations of numeric values; a Series travels as a one-column table."""
    if isinstance(data, pd.Series) and pd.api.types.is_bool_dtype(data.dtype):
        raise EvaluationError("describe() of a bool Series gives unique/top/freq, which need "
                              "rows")
    table = data if isinstance(data, pd.DataFrame) else pd.DataFrame({data.name: data})
    if table.shape[1] == 0:
        raise EvaluationError("describe() found no numeric column; it describes numeric "
                              "columns only")
    return {**_spread_parts(table, None, mean), "sum": table.sum()}


def _ratio(numerator: Any, denominator: Any) -> Any:
    """numerator / denominator, NaN (without a warning) where the denominator is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return numerator / denominator


def _mean(parts: dict[str, Any], **_: Any) -> Any:
    return _ratio(parts["sum"], parts["count"])


def _variance(parts: dict[str, Any], ddof: int = 1, **_: Any) -> Any:
    """sum((x - m)**2) less the correction for m not being exactly the mean, over n - ddof."""
    n = parts["count"]
    centred = parts["squares"] - _ratio(parts["deviations"] ** 2, n)
    variance = _ratio(np.maximum(centred, 0), n - ddof)
    if isinstance(variance, (pd.Series, pd.DataFrame)):
        return variance.where(n > ddof)
    return variance if n > ddof else np.float64(np.nan)


def _std(parts: dict[str, Any], ddof: int = 1, **_: Any) -> Any:
    return np.sqrt(_variance(parts, ddof))


def _sem(parts: dict[str, Any], ddof: int = 1, **_: Any) -> Any:
    return _ratio(_std(parts, ddof), np.sqrt(parts["count"]))


def _describe(parts: dict[str, Any], series: bool = False) -> Any:
    count = parts["count"]
    table = pd.DataFrame(
        {"count": count.astype("float64"), "mean": _ratio(parts["sum"], count),
         "std": _std(parts)}
    ).T
    return table.iloc[:, 0] if series else table


def _part(name: str) -> Callable[..., Any]:
    return lambda parts, **_: parts[name]


@dataclass(frozen=True)
class Reduction:
    partial: Callable[..., dict[str, Any]]  # (input values..., **params) -> additive parts
    finalize: Callable[..., Any]  # (added-up parts, **params) -> the result
    # A reduction grouped by keys of its own rows (the values themselves, a histogram's bins):
    # (rows, **params) -> each row's key. Its parts are then per key, like a groupby's.
    keys: Callable[..., Any] | None = None
    # Parts per pair of columns (cov, corr), each with a "count" of the rows both are present
    # in: the `min_rows` rule empties the pairs of too few rows.
    pairwise: bool = False
    sees_inputs: bool = False  # finalize also takes the aggregates the workers were sent


def grouped(kind: str) -> bool:
    """Whether reduction `kind` sends its parts per key: a groupby, or one keyed by its rows."""
    return kind.startswith("groupby_") or REDUCTIONS[kind].keys is not None


def _over_rows(parts: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """The parts of a reduction over all rows: the grouped parts without keys."""
    return lambda data, *aggregates, **params: parts(data, None, *aggregates, **params)


def _by_key(finalize: Callable[..., Any]) -> Callable[..., Any]:
    """A grouped result sorted by key, as pandas' groupby(sort=True) gives it."""
    return lambda parts, **params: finalize(parts, **params).sort_index()


_GROUPABLE = {
    "count": (_count_parts, _part("count")),
    "sum": (_sum_parts, _part("sum")),
    "mean": (_mean_parts, _mean),
    "var": (_spread_parts, _variance),
    "std": (_spread_parts, _std),
    "sem": (_spread_parts, _sem),
}

REDUCTIONS: dict[str, Reduction] = {
    **{kind: Reduction(_over_rows(parts), final) for kind, (parts, final) in _GROUPABLE.items()},
    **{f"groupby_{kind}": Reduction(parts, _by_key(final))
       for kind, (parts, final) in _GROUPABLE.items()},
    "groupby_size": Reduction(size_parts, _by_key(_part("size"))),
    "all": Reduction(_truth_parts(False), lambda parts, **_: parts["matches"] == 0),
    "any": Reduction(_truth_parts(True), lambda parts, **_: parts["matches"] > 0),
    "describe": Reduction(_describe_parts, _describe),
    order.KIND: Reduction(order.parts, order.finalize, sees_inputs=True),
    order.GROUPED_KIND: Reduction(order.grouped_parts, order.grouped_finalize, sees_inputs=True),
}


def add_parts(left: Any, right: Any) -> Any:
    """The sum of two workers' parts, aligned on labels where they are pandas objects.

    Missing labels count as 0, and integer parts stay integers (pandas' own fill_value=0 would
    turn them into floats).
    """
    if isinstance(left, pd.DataFrame):
        index, columns = left.index.union(right.index), left.columns.union(right.columns)
        return (left.reindex(index=index, columns=columns, fill_value=0)
                + right.reindex(index=index, columns=columns, fill_value=0))
    if isinstance(left, pd.Series):
        index = left.index.union(right.index)
        return left.reindex(index, fill_value=0) + right.reindex(index, fill_value=0)
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
    if op == "method":
        return getattr(args[0], params["name"])(**dict(zip(params["keywords"], args[1:])))
    if op == "columns":  # Series of the same rows side by side: named after them, or `names`
        return pd.concat(args, axis=1, keys=params.get("names"))
    if op == "combine":  # results of an agg, in pandas' shape
        return combine(params["form"], params["labels"], args, params.get("name"))
    raise ValueError(f"unknown operation {op!r}")


def reduce_locally(params: dict[str, Any], value: Any) -> Any:
    """A reduction of an aggregate value, on the coordinator: plain pandas."""
    kind = params["kind"]
    kwargs = {k: v for k, v in params.items() if k != "kind"}
    return getattr(value, kind)(**kwargs)


KNOWN_OPS = {"source", "const", "getitem", "filter", "binary", "unary", "method", "reduce",
             "columns", "combine"}
_NAMED = {"binary": ("op", BINARY), "unary": ("op", UNARY), "method": ("name", METHODS),
          "reduce": ("kind", REDUCTIONS)}


def check_node(node: Node) -> None:
    """Refuses (ValueError) an operation or a named variant of one that is not known here."""
    if node.op not in KNOWN_OPS:
        raise ValueError(f"unknown operation {node.op!r} in node {node.id}")
    if node.op in _NAMED:
        param, known = _NAMED[node.op]
        if node.params.get(param) not in known:
            raise ValueError(f"unknown {node.op} {node.params.get(param)!r} in node {node.id}")
        if node.params[param] in (order.KIND, order.GROUPED_KIND):
            order.check(node.id, node.params, len(node.inputs),
                        node.params[param] == order.GROUPED_KIND)
