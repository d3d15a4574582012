"""The lazy, federated subset of pandas that `execute()` is written with.

`execute()` runs once, at `build()` time, on these proxies: each operation records a node of the
task's graph instead of computing anything. What cannot be federated is refused right there, with
the operation's name and the reason. docs/pandas.md lists what is supported.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as _pandas

from sdk.analytics import order
from sdk.analytics.graph import Graph


class UnsupportedOperation(TypeError):
    """An operation that deltaflow cannot run federated, raised at `build()`."""


_ROWS_REASON = "it would need rows from every holder in one place, and rows never leave a holder"
_NOT_A_SUM = "it is not a sum of per-holder parts (only sums and counts leave a holder); "
_ORDER_REASON = "it depends on the order of rows, which means nothing across holders"
_CODE_REASON = "it would run arbitrary code on the holders; use column arithmetic instead"
_LATER_REASON = "its value is known only when the task runs"
_UNKNOWN_REASON = "it is known only on the holders, when the task runs"
_REFUSED = {
    **dict.fromkeys(["mode", "idxmin", "idxmax", "prod", "product", "nlargest", "nsmallest"],
                    _NOT_A_SUM + _ROWS_REASON),
    "nunique": _NOT_A_SUM + "a value that two holders share would count twice; declare the "
               "values a Series may take: s.nunique(values=[...])",
    **dict.fromkeys(["iloc", "loc", "iat", "at", "head", "tail", "sample", "take", "first",
                     "last", "unique", "drop_duplicates", "duplicated", "to_numpy", "values",
                     "to_list", "tolist", "to_dict", "to_csv", "items", "iterrows",
                     "itertuples"], _ROWS_REASON),
    **dict.fromkeys(["sort_values", "sort_index", "rank", "cumsum", "cumprod", "cummin",
                     "cummax", "diff", "shift", "pct_change", "rolling", "expanding", "ewm"],
                    _ORDER_REASON),
    **dict.fromkeys(["apply", "map", "applymap", "transform", "pipe", "eval", "query"],
                    _CODE_REASON),
    **dict.fromkeys(["shape", "size", "index", "columns", "dtypes", "dtype", "empty", "name"],
                    _UNKNOWN_REASON),
    **dict.fromkeys(["merge", "join"], "it matches rows of two tables, " + _ROWS_REASON),
}
_RANKS_REASON = ("it needs the rank of each row among every holder's rows; only pearson is "
                 "a sum of per-holder parts")
# Names `agg` takes: the reductions of a Series, DataFrame or groupby (those refused say why).
_AGG_NAMES = frozenset({"sum", "mean", "count", "var", "std", "sem", "skew", "kurt", "all",
                        "any", "size", "median", "min", "max", "prod", "nunique"})


def refuse(operation: str, reason: str | None = None) -> UnsupportedOperation:
    reason = reason or _REFUSED.get(operation, _ROWS_REASON)
    return UnsupportedOperation(f"{operation} is not supported in a federated task: {reason}")


def _refuse_attribute(name: str) -> UnsupportedOperation:
    missing = "deltaflow's pandas does not have it (see docs/pandas.md)"
    return refuse(name, _REFUSED.get(name, missing))


# numpy ufuncs that map onto the graph's own unary and binary operations.
_UFUNC_UNARY = {"negative": "neg", "positive": "pos", "absolute": "abs", "invert": "invert",
                "sqrt": "sqrt", "exp": "exp", "log": "log", "log10": "log10", "log1p": "log1p"}
_UFUNC_BINARY = {"add": "add", "subtract": "sub", "multiply": "mul", "divide": "truediv",
                 "floor_divide": "floordiv", "remainder": "mod", "power": "pow", "less": "lt",
                 "less_equal": "le", "greater": "gt", "greater_equal": "ge", "equal": "eq",
                 "not_equal": "ne", "bitwise_and": "and", "bitwise_or": "or",
                 "bitwise_xor": "xor"}


class _Lazy:
    """A value that `execute()` holds: a node of the graph being recorded."""

    def __init__(self, graph: Graph, node: int, rows: bool, source: int | None = None) -> None:
        self._graph = graph
        self._node = node
        self._rows = rows  # row-wise (on the holders) rather than an aggregate
        # The dataset (source node) its rows come from; a row-wise node without one is a source.
        self._source = source if source is not None or not rows else node

    def _record(self, cls: type, operation: str, inputs: tuple[Any, ...], rows: bool,
                source: int | None = None, **params: Any) -> Any:
        node = self._graph.add(operation, tuple(_node_of(self._graph, v) for v in inputs),
                               **params)
        return cls(self._graph, node, rows, source)

    def _derive(self, cls: type, operation: str, operands: tuple[Any, ...], **params: Any) -> Any:
        """An element-wise result of `operands`, refused where pandas would align row labels."""
        rows = [v for v in operands if isinstance(v, _Lazy) and v._rows]
        if len({v._source for v in rows}) > 1:
            raise refuse("combining rows of two datasets",
                         "each holder's datasets are separate tables whose rows do not line up")
        row_series = any(isinstance(v, Series) for v in rows)
        for value in operands:
            if rows and isinstance(value, _Lazy) and not value._rows and (
                    isinstance(value, DataFrame) or isinstance(value, Series) and row_series):
                raise refuse(f"combining rows with an aggregate {type(value).__name__}",
                             "pandas would match its labels with row labels, which mean nothing "
                             "across holders; combine rows with scalars, or a DataFrame with a "
                             "per-column Series")
        return self._record(cls, operation, operands, bool(rows),
                            rows[0]._source if rows else None, **params)

    def _binary(self, op: str, other: Any, reflected: bool = False) -> Any:
        operands = (other, self) if reflected else (self, other)
        return self._derive(_wider(self, other), "binary", operands, op=op)

    def _unary(self, op: str) -> Any:
        return self._derive(type(self), "unary", (self,), op=op)

    def _method(self, cls: type, name: str, **arguments: Any) -> Any:
        """A whitelisted pandas method, its arguments recorded as inputs (constants or lazies)."""
        return self._derive(cls, "method", (self, *arguments.values()), name=name,
                            keywords=list(arguments))

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
    def __neg__(self) -> Any: return self._unary("neg")
    def __pos__(self) -> Any: return self._unary("pos")
    def __abs__(self) -> Any: return self._unary("abs")
    def __invert__(self) -> Any: return self._unary("invert")

    __hash__ = None  # type: ignore[assignment]

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        """numpy's element-wise functions (`np.sqrt(d.x)`, `np.float64(2) * d.x`) as graph nodes."""
        name = ufunc.__name__
        if method == "__call__" and not kwargs:
            if len(inputs) == 1 and name in _UFUNC_UNARY:
                return self._unary(_UFUNC_UNARY[name])
            if len(inputs) == 2 and name in _UFUNC_BINARY:
                reflected = inputs[0] is not self
                return self._binary(_UFUNC_BINARY[name], inputs[0] if reflected else inputs[1],
                                    reflected)
        raise refuse(f"numpy.{name}", "deltaflow's pandas runs numpy's arithmetic, comparisons, "
                     "sqrt, exp, log, log10 and log1p, called plainly")

    def abs(self) -> Any:
        return abs(self)

    def isna(self) -> Any:
        return self._unary("isna")

    def notna(self) -> Any:
        return self._unary("notna")

    isnull = isna
    notnull = notna

    def __bool__(self) -> bool:
        raise refuse("truth testing (if/and/or on a federated value)",
                     _LATER_REASON + "; use & | ~ for row-wise logic")

    def __float__(self) -> float:
        raise refuse("float()", _LATER_REASON)

    def __int__(self) -> int:
        raise refuse("int()", _LATER_REASON)

    def __iter__(self) -> Any:
        raise refuse("iteration", _ROWS_REASON)

    def __len__(self) -> int:
        raise refuse("len()", "the number of rows is known only when the task runs; use count()")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise _refuse_attribute(name)


class _Table(_Lazy):
    """What Series and DataFrame share: element-wise methods and reductions over rows."""

    _reduced: type[_Lazy]  # what a reduction gives: a Scalar for a Series, a Series for a frame

    def _filter(self, mask: _Lazy) -> Any:
        if not isinstance(mask, Series) or self._rows != mask._rows:
            raise refuse("filtering by this mask", "filter rows with a boolean Series computed "
                         "from the same rows (d[d.age > 40]), or aggregates with aggregates")
        return self._derive(type(self), "filter", (self, mask))

    def fillna(self, value: Any) -> Any:
        return self._method(type(self), "fillna", value=value)

    def astype(self, dtype: Any) -> Any:
        names = ({k: _dtype_name(v) for k, v in dtype.items()} if isinstance(dtype, dict)
                 else _dtype_name(dtype))
        return self._method(type(self), "astype", dtype=names)

    def isin(self, values: Any) -> Any:
        return self._method(type(self), "isin", values=list(values))

    def clip(self, lower: Any = None, upper: Any = None) -> Any:
        return self._method(type(self), "clip", lower=lower, upper=upper)

    def round(self, decimals: int = 0) -> Any:
        return self._method(type(self), "round", decimals=decimals)

    def _reduce(self, kind: str, *aggregates: _Lazy, result: type | None = None,
                **params: Any) -> Any:
        return self._record(result or self._reduced, "reduce", (self, *aggregates), False,
                            kind=kind, **params)

    def sum(self, skipna: bool = True, numeric_only: bool = False) -> Any:
        return self._reduce("sum", skipna=skipna, numeric_only=numeric_only)

    def mean(self, skipna: bool = True, numeric_only: bool = False) -> Any:
        return self._reduce("mean", skipna=skipna, numeric_only=numeric_only)

    def _spread(self, kind: str, ddof: int, skipna: bool, numeric_only: bool) -> Any:
        """var, std or sem: over rows, a second round sums deviations from the first's mean."""
        params = {"ddof": ddof, "skipna": skipna, "numeric_only": numeric_only}
        if not self._rows:
            return self._reduce(kind, **params)
        return self._reduce(kind, self.mean(skipna=skipna, numeric_only=numeric_only), **params)

    def var(self, ddof: int = 1, skipna: bool = True, numeric_only: bool = False) -> Any:
        return self._spread("var", ddof, skipna, numeric_only)

    def std(self, ddof: int = 1, skipna: bool = True, numeric_only: bool = False) -> Any:
        return self._spread("std", ddof, skipna, numeric_only)

    def sem(self, ddof: int = 1, skipna: bool = True, numeric_only: bool = False) -> Any:
        return self._spread("sem", ddof, skipna, numeric_only)

    def _moment(self, kind: str, skipna: bool, numeric_only: bool) -> Any:
        """skew or kurt: over rows, a second round sums powers of deviations from the mean."""
        params = {"skipna": skipna, "numeric_only": numeric_only}
        if not self._rows:
            return self._reduce(kind, **params)
        return self._reduce(kind, self.mean(skipna=skipna, numeric_only=numeric_only), **params)

    def skew(self, skipna: bool = True, numeric_only: bool = False) -> Any:
        return self._moment("skew", skipna, numeric_only)

    def kurt(self, skipna: bool = True, numeric_only: bool = False) -> Any:
        return self._moment("kurt", skipna, numeric_only)

    kurtosis = kurt

    def agg(self, func: Any) -> Any:
        """pandas' agg with reduction names: a name, a list of them, or a dict of a name or a
        list of names per column."""
        if isinstance(func, str):
            return _aggregate(self, func)
        if isinstance(func, dict):
            return self._agg_dict(func)
        names = _agg_names(func)
        results = [_aggregate(self, name) for name in names]
        if isinstance(self, Series):
            return _combine(results, "series", names, name=_name_of(self._graph, self._node))
        return _combine(results, "rows", names)

    aggregate = agg

    def _agg_dict(self, func: dict[Any, Any]) -> Any:
        raise refuse("agg with a dict on a Series", "name reductions as a list")

    def _value_counts(self, normalize: bool, sort: bool, ascending: bool, dropna: bool,
                      values: Any, **params: Any) -> Series:
        _sorted_without_missing("value_counts", sort, dropna)
        params.update(normalize=normalize, ascending=ascending)
        if values is not None:
            if not self._rows:
                raise refuse("value_counts(values=...) of an aggregate",
                             "declare values for rows only")
            params["declared_keys"] = _declared_keys(values, "values")
        return self._reduce("value_counts", result=Series, **params)

    def all(self, skipna: bool = True, bool_only: bool = False) -> Any:
        return self._reduce("all", skipna=skipna, bool_only=bool_only)

    def any(self, skipna: bool = True, bool_only: bool = False) -> Any:
        return self._reduce("any", skipna=skipna, bool_only=bool_only)

    def quantile(self, q: Any = 0.5, numeric_only: bool = False) -> Any:
        """pandas' linear interpolation between the two neighbouring order statistics, each
        found by bisection; a holder releases them only where its policy allows it."""
        qs, scalar = _quantiles(q)
        return self._order("quantile", numeric_only, q=qs, scalar=scalar)

    def median(self, skipna: bool = True, numeric_only: bool = False) -> Any:
        return self._order("median", numeric_only, skipna=skipna)

    def min(self, skipna: bool = True, numeric_only: bool = False) -> Any:
        return self._order("min", numeric_only, skipna=skipna)

    def max(self, skipna: bool = True, numeric_only: bool = False) -> Any:
        return self._order("max", numeric_only, skipna=skipna)

    def _order(self, stat: str, numeric_only: bool, skipna: bool = True,
               **params: Any) -> Any:
        """An order statistic: a chain of search steps, each fed the previous one's state."""
        if not self._rows:
            raise refuse(f"{stat}() of an aggregate", "order statistics are computed over rows")
        if not skipna:
            raise refuse(f"{stat}(skipna=False)", "missing values are always skipped")
        series = isinstance(self, Series)
        scalar = params.get("scalar", True)
        result = (Scalar if scalar else Series) if series else (Series if scalar else DataFrame)
        state: tuple[Any, ...] = ()
        for step in range(order.STEPS):
            node = self._reduce(order.KIND, *state, result=result, stat=stat, step=step,
                                series=series, numeric_only=numeric_only, **params)
            state = (node,)
        return node

    def describe(self) -> Any:
        """count, mean and std of numeric values (pandas' min, quantiles and max are not sums)."""
        if not self._rows:
            return self._reduce("describe", result=type(self))
        data = self if isinstance(self, Series) else self.select_dtypes(include=["number"])
        return data._reduce("describe", data.mean(), result=type(self),
                            series=isinstance(self, Series))


class Series(_Table):
    """A lazy pandas Series: a column of every holder's rows, or an aggregate."""

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, _Lazy):
            return self._filter(key)
        if self._rows:
            raise refuse("selecting rows by label or position", "row labels mean nothing "
                         "across holders; filter with a boolean Series instead")
        return self._derive(Series if isinstance(key, list) else Scalar, "getitem", (self,),
                            key=key)

    def __getattr__(self, name: str) -> Any:
        """`d.mean().age` is the label's value, as in pandas; rows have no meaningful labels."""
        if name.startswith("_") or self._rows or hasattr(_pandas.Series, name):
            return super().__getattr__(name)
        return self[name]

    def count(self) -> Scalar:
        return self._reduce("count")

    def between(self, left: Any, right: Any, inclusive: str = "both") -> Series:
        return self._method(Series, "between", left=left, right=right, inclusive=inclusive)

    def value_counts(self, normalize: bool = False, sort: bool = True, ascending: bool = False,
                     dropna: bool = True, values: Any = None) -> Series:
        """Rows per value, as pandas; `values` declares the values the answer reports, as
        groupby's `keys` does (rows of other values are left out, each declared one is there)."""
        return self._value_counts(normalize, sort, ascending, dropna, values)

    def nunique(self, dropna: bool = True, values: Any = None) -> Scalar:
        """How many of the declared `values` occur in any holder's rows (see docs/pandas.md)."""
        if not self._rows:
            return self._reduce("nunique", dropna=dropna)
        if values is None:
            raise refuse("nunique without values=[...]", _REFUSED["nunique"])
        if not dropna:
            raise refuse("nunique(dropna=False)", "missing values are never counted as a value")
        return (self.value_counts(values=values) > 0).sum()

    def _pair(self, kind: str, other: Any, **params: Any) -> Scalar:
        """cov or corr with another Series of the same rows, over the rows where both are
        present; a first round finds each one's mean over those rows."""
        if not (isinstance(other, Series) and self._rows and other._rows):
            raise refuse(f"{kind} with this value", f"pass another Series of the same rows: "
                         f"d.x.{kind}(d.y)")
        both = self._derive(DataFrame, "columns", (self, other), names=[0, 1])
        means = both._reduce("pairwise_mean", result=DataFrame)
        return both._reduce(kind, means, result=Scalar, pair=True, **params)

    def corr(self, other: Any, method: str = "pearson", min_periods: int | None = None) -> Scalar:
        _pearson_only(method)
        return self._pair("corr", other, min_periods=min_periods)

    def cov(self, other: Any, min_periods: int | None = None, ddof: int = 1) -> Scalar:
        return self._pair("cov", other, min_periods=min_periods, ddof=ddof)


class DataFrame(_Table):
    """A lazy pandas DataFrame: every holder's rows, as if stacked."""

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, _Lazy):
            return self._filter(key)
        if isinstance(key, slice):
            raise refuse("slicing rows", "row positions mean nothing across holders")
        return self._derive(DataFrame if isinstance(key, list) else Series, "getitem", (self,),
                            key=key)

    def __getattr__(self, name: str) -> Any:
        """`d.age` is the column, unless pandas' DataFrame has an attribute of that name."""
        if name.startswith("_") or hasattr(_pandas.DataFrame, name):
            return super().__getattr__(name)
        return self[name]

    def count(self, numeric_only: bool = False) -> Series:
        return self._reduce("count", numeric_only=numeric_only)

    def value_counts(self, subset: Any = None, normalize: bool = False, sort: bool = True,
                     ascending: bool = False, dropna: bool = True, values: Any = None) -> Series:
        """Rows per distinct row of the columns (`subset`, or all), as pandas; `values`
        declares those the answer reports, as tuples."""
        data = self if subset is None else self[list(subset)]
        if not self._rows:
            return data._reduce("value_counts", result=Series, normalize=normalize, sort=sort,
                                ascending=ascending, dropna=dropna)
        return data._value_counts(normalize, sort, ascending, dropna, values, frame=True)

    def _pairwise(self, kind: str, numeric_only: bool, **params: Any) -> DataFrame:
        if not self._rows:
            return self._reduce(kind, result=DataFrame, numeric_only=numeric_only, **params)
        means = self._reduce("pairwise_mean", result=DataFrame, numeric_only=numeric_only)
        return self._reduce(kind, means, result=DataFrame, numeric_only=numeric_only, **params)

    def cov(self, min_periods: int | None = None, ddof: int = 1,
            numeric_only: bool = False) -> DataFrame:
        """Pairwise covariance of columns over the rows where both are present, as pandas."""
        return self._pairwise("cov", numeric_only, min_periods=min_periods, ddof=ddof)

    def corr(self, method: str = "pearson", min_periods: int = 1,
             numeric_only: bool = False) -> DataFrame:
        """Pairwise Pearson correlation of columns, as pandas."""
        _pearson_only(method)
        return self._pairwise("corr", numeric_only, min_periods=min_periods)

    def _agg_dict(self, func: dict[Any, Any]) -> Any:
        """{column: name} gives a Series; a list of names anywhere gives a table."""
        lists, labels, results = _agg_per_column(self, func)
        if lists:
            return _combine(results, "table", labels)
        return _combine(results, "series", [column for column, _ in labels])

    def __setitem__(self, key: str, value: Any) -> None:
        """`d["new"] = ...`: this proxy now stands for the frame with that column."""
        if not isinstance(key, str):
            raise refuse("setting a column whose name is not text", "name new columns with text")
        new = self.assign(**{key: value})
        self._node, self._rows, self._source = new._node, new._rows, new._source

    def assign(self, **columns: Any) -> DataFrame:
        for value in columns.values():
            if isinstance(value, _Table) and not value._rows:
                raise refuse("assigning an aggregate Series or DataFrame as a column",
                             "pandas would match its labels with row labels; assign a scalar "
                             "or a Series computed from the same rows")
        return self._method(DataFrame, "assign", **columns)

    def drop(self, columns: Any) -> DataFrame:
        return self._method(DataFrame, "drop", columns=columns)

    def select_dtypes(self, include: Any = None, exclude: Any = None) -> DataFrame:
        given = {k: v for k, v in (("include", include), ("exclude", exclude)) if v is not None}
        return self._method(DataFrame, "select_dtypes", **given)

    def groupby(self, by: Any, sort: bool = True, dropna: bool = True,
                keys: Any = None) -> GroupBy:
        """Reductions per value of one column (or of a Series computed from the same rows).

        `keys` (a list of values) declares the keys the answer reports: rows of other keys are
        left out, and every declared key is in the answer (0 rows where no holder has it).
        Differential privacy needs it, since a key that appears is itself a release."""
        declared = _declared_keys(keys)
        if not self._rows:
            raise refuse("groupby of an aggregate", "group rows; aggregates are already small")
        _sorted_without_missing("groupby", sort, dropna)
        if isinstance(by, list) and len(by) == 1:
            by = by[0]
        if isinstance(by, list) and by and not any(isinstance(k, (_Lazy, list, tuple, dict))
                                                   for k in by):
            if len(set(by)) != len(by):
                raise refuse("groupby by a column twice", "name each key column once")
            if declared is not None and any(not isinstance(k, tuple) or len(k) != len(by)
                                            for k in declared):
                raise refuse("groupby(keys=...) of several columns", f"declare each key as a "
                             f"tuple of {len(by)} values: keys=[('a', 1), ('b', 2)]")
            return GroupBy(self, self[by], self.drop(columns=by), declared)
        column = _column_of(self, by) if isinstance(by, Series) else None
        if column is not None:
            by = column  # pandas leaves a key that is a column of the frame out of the result
        if isinstance(by, Series):
            if not by._rows or by._source != self._source:
                raise refuse("groupby by this Series", "group by a column, or a Series computed "
                             "from the same rows")
            return GroupBy(self, by, self, declared)
        if isinstance(by, (_Lazy, list, tuple, dict)):
            raise refuse("groupby by this value", "group by a column, a list of columns, or "
                         "a Series computed from the same rows")
        return GroupBy(self, self[by], self.drop(columns=[by]), declared)


class Scalar(_Lazy):
    """A lazy aggregate scalar: known on the coordinator once its round is done."""


class GroupBy:
    """`d.groupby(key)`: reductions per key over every holder's rows, sorted by key."""

    def __init__(self, frame: DataFrame, keys: Series, data: _Table,
                 declared: list[Any] | None = None) -> None:
        self._frame = frame
        self._keys = keys
        self._data = data  # what the reductions reduce: the frame less its key, or a selection
        self._declared = declared  # the keys the task declares, or None

    def __getitem__(self, key: Any) -> GroupBy:
        if isinstance(key, _Lazy):
            raise refuse("filtering a groupby", "filter the rows first: d[mask].groupby(key)")
        return GroupBy(self._frame, self._keys, self._frame[key], self._declared)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if hasattr(_pandas.api.typing.DataFrameGroupBy, name):
            raise _refuse_attribute(name)
        return self[name]

    def __iter__(self) -> Any:
        raise refuse("iterating over groups", _ROWS_REASON)

    def _reduce(self, kind: str, *aggregates: _Lazy, result: type | None = None,
                **params: Any) -> Any:
        if self._declared is not None:
            params["declared_keys"] = self._declared
        return self._data._record(result or type(self._data), "reduce",
                                  (self._data, self._keys, *aggregates), False,
                                  kind="groupby_" + kind, **params)

    def size(self) -> Series:
        return self._reduce("size", result=Series)

    def count(self) -> Any:
        return self._reduce("count")

    def sum(self, numeric_only: bool = False) -> Any:
        return self._reduce("sum", numeric_only=numeric_only)

    def mean(self, numeric_only: bool = False) -> Any:
        return self._reduce("mean", numeric_only=numeric_only)

    def _spread(self, kind: str, ddof: int, numeric_only: bool) -> Any:
        """var, std or sem per key: a second round sums deviations from each key's mean."""
        return self._reduce(kind, self.mean(numeric_only=numeric_only), ddof=ddof,
                            numeric_only=numeric_only)

    def var(self, ddof: int = 1, numeric_only: bool = False) -> Any:
        return self._spread("var", ddof, numeric_only)

    def std(self, ddof: int = 1, numeric_only: bool = False) -> Any:
        return self._spread("std", ddof, numeric_only)

    def sem(self, ddof: int = 1, numeric_only: bool = False) -> Any:
        return self._spread("sem", ddof, numeric_only)

    def quantile(self, q: Any = 0.5) -> Series:
        qs, scalar = _quantiles(q)
        if not scalar:
            raise refuse("a groupby's quantile of a list of q", "its result would have a "
                         "MultiIndex, which is not supported; ask for one q at a time")
        return self._order("quantile", q=qs)

    def median(self) -> Series:
        return self._order("median")

    def min(self) -> Series:
        return self._order("min")

    def max(self) -> Series:
        return self._order("max")

    def _order(self, stat: str, **params: Any) -> Series:
        """An order statistic per key of one column: a chain of search steps, as over rows."""
        if not isinstance(self._data, Series):
            raise refuse(f"a groupby's {stat}() of several columns", "select one column: "
                         f"g['x'].{stat}()")
        if isinstance(self._keys, DataFrame):
            raise refuse(f"a groupby's {stat}() over several key columns", "its search is "
                         "built for one key; group by one column")
        if self._declared is not None:
            raise refuse(f"a groupby's {stat}() with declared keys", "declared keys are for "
                         "differential privacy, under which a grouped order statistic is not "
                         "built yet")
        state: tuple[Any, ...] = ()
        for step in range(order.STEPS):
            node = self._reduce(order.KIND, *state, result=Series, stat=stat, step=step,
                                series=True, **params)
            state = (node,)
        return node

    def agg(self, func: Any) -> Any:
        """pandas' agg with reduction names: a name, a list, or a dict per column."""
        if isinstance(func, str):
            return _aggregate(self, func)
        if isinstance(func, dict):
            lists, labels, results = _agg_per_column(self, func)
            return _combine(results, "columns",
                            labels if lists else [column for column, _ in labels])
        names = _agg_names(func)
        results = [_aggregate(self, name) for name in names]
        return _combine(results, "columns" if isinstance(self._data, Series) else "by_column",
                        names)

    aggregate = agg


def _agg_names(func: Any) -> list[str]:
    """agg's list of reduction names, each once."""
    if callable(func):
        raise refuse("agg with a function", _CODE_REASON + "; name reductions as text, "
                     "'mean' rather than np.mean")
    if not isinstance(func, (list, tuple)) or not func:
        raise refuse("agg with this argument", "name reductions: 'mean', ['mean', 'std'], or "
                     "{'column': 'mean'}")
    names = list(func)
    if len(set(map(str, names))) != len(names):
        raise refuse(f"agg({names!r})", "name each reduction once")
    return names


def _agg_per_column(value: Any, func: dict[Any, Any]) -> tuple[bool, list[Any], list[Any]]:
    """agg's {column: name or [names]}: whether a list is given, the (column, name) pairs, and
    the reduction of each."""
    lists = any(not isinstance(names, str) for names in func.values())
    labels = [(column, name) for column, names in func.items()
              for name in ([names] if isinstance(names, str) else _agg_names(names))]
    return lists, labels, [_aggregate(value[column], name) for column, name in labels]


def _aggregate(value: Any, name: Any) -> Any:
    """One reduction that agg names, by its method (which refuses what it cannot run)."""
    if callable(name):
        _agg_names(name)  # refuses code
    if not isinstance(name, str) or name not in _AGG_NAMES:
        raise refuse(f"agg({name!r})", "name a reduction: " + ", ".join(sorted(_AGG_NAMES)))
    return getattr(value, name)()


def _combine(results: list[_Lazy], form: str, labels: list[Any], **params: Any) -> Any:
    """A node that lays out `results` as pandas' agg does (sdk.analytics.shapes)."""
    first = results[0]
    cls = Series if form == "series" else DataFrame
    return first._record(cls, "combine", tuple(results), False, form=form, labels=labels,
                         **params)


def _name_of(graph: Graph, node_id: int) -> Any:
    """The name pandas gives the Series of node `node_id`: its column's, kept through
    element-wise operations and filters, lost where two Series of other names combine."""
    node = graph[node_id]
    if node.op == "getitem":
        return None if isinstance(node.params["key"], (list, tuple)) else node.params["key"]
    if node.op in ("filter", "unary", "method"):
        return _name_of(graph, node.inputs[0])
    if node.op == "binary":
        names = {_name_of(graph, i) for i in node.inputs if graph[i].op != "const"}
        return names.pop() if len(names) == 1 else None
    return None


def _sorted_without_missing(operation: str, sort: bool, dropna: bool) -> None:
    """Refuses keys in order of first appearance, and missing values kept as a key."""
    if not sort:
        raise refuse(f"{operation}(sort=False)", "the order in which keys first appear depends "
                     "on how rows are spread over holders; results are sorted by key")
    if not dropna:
        raise refuse(f"{operation}(dropna=False)", "missing keys are not kept as a group; fill "
                     "them first: d[key] = d[key].fillna(value)")


def _pearson_only(method: str) -> None:
    if method != "pearson":
        raise refuse(f"corr(method={method!r})", _RANKS_REASON)


def histogram(series: Series, bins: Any) -> tuple[Series, np.ndarray]:
    """numpy.histogram(series, bins) of every holder's rows, with explicit edges: the counts
    per bin [e_i, e_i+1) (the last closed on the right) and the edges, as numpy gives them."""
    if not isinstance(series, Series) or not series._rows:
        raise refuse("histogram of this value", "pass a Series of rows: histogram(d.age, ...)")
    try:
        edges = np.asarray(bins, dtype=np.float64)
    except (TypeError, ValueError):
        edges = np.zeros(0)
    if edges.ndim != 1 or len(edges) < 2 or not np.isfinite(edges).all() or \
            (np.diff(edges) < 0).any():
        raise refuse("histogram with these bins", "give the bin edges, increasing, at least "
                     "two: bins=[0, 10, 20, 50]; a number of bins would need the range of "
                     "every holder's rows")
    counts = series._reduce("histogram", result=Series, bins=edges.tolist(),
                            declared_keys=list(range(len(edges) - 1)))
    return counts, np.asarray(bins)


def crosstab(index: Series, columns: Series, row_values: Any = None,
             column_values: Any = None) -> DataFrame:
    """pandas.crosstab(index, columns): rows per pair of values, as pandas. Declaring both
    `row_values` and `column_values` fixes the table's labels (rows of other values left out)."""
    if not all(isinstance(v, Series) and v._rows for v in (index, columns)):
        raise refuse("crosstab of this value", "pass two Series of the same rows")
    if (row_values is None) != (column_values is None):
        raise refuse("crosstab with values declared on one side",
                     "declare row_values and column_values both, or neither")
    pairs = index._derive(DataFrame, "columns", (index, columns))
    params: dict[str, Any] = {}
    if row_values is not None:
        rows = _declared_keys(row_values, "row_values")
        cols = _declared_keys(column_values, "column_values")
        params["declared_keys"] = [(r, c) for r in rows for c in cols]
    return pairs._reduce("crosstab", result=DataFrame, **params)


Series._reduced = Scalar
DataFrame._reduced = Series


def _quantiles(q: Any) -> tuple[list[float], bool]:
    """quantile's q as a list of floats, and whether it was given as one number."""
    scalar = not isinstance(q, (list, tuple))
    qs = [float(v) for v in ([q] if scalar else q)]
    if not qs or not all(0 <= v <= 1 for v in qs):
        raise refuse(f"quantile(q={q!r})", "q must be a number in [0, 1] or a non-empty list "
                     "of them")
    return qs, scalar


def _wider(*values: Any) -> type:
    """The type of an element-wise result: a DataFrame over a Series over a Scalar."""
    for cls in (DataFrame, Series):
        if any(isinstance(v, cls) for v in values):
            return cls
    return Scalar


def _declared_keys(keys: Any, argument: str = "keys") -> list[Any] | None:
    """Declared keys (groupby's `keys`, value_counts' `values`) as a list of distinct text,
    numbers or booleans, or of tuples of them (several keys); None if not given."""
    if keys is None:
        return None
    if isinstance(keys, (str, bytes, dict, _Lazy)) or not hasattr(keys, "__iter__"):
        raise refuse(f"{argument}={keys!r}", f"declare them as a list: {argument}=['a', 'b']")
    declared = [tuple(map(_declared_key, key)) if isinstance(key, tuple) else
                _declared_key(key) for key in keys]
    if not declared or len(set(declared)) != len(declared):
        raise refuse(f"{argument}={declared!r}", "declare each one once, at least one")
    return declared


def _declared_key(key: Any) -> Any:
    if not isinstance(key, (str, int, float, bool, np.integer, np.floating, np.bool_)) or (
            isinstance(key, (float, np.floating)) and np.isnan(key)):
        raise refuse(f"declared key {key!r}", "declare keys that are text, numbers or "
                     "booleans (missing keys are never a group)")
    return key.item() if isinstance(key, np.generic) else key


def _column_of(frame: DataFrame, series: Series) -> Any:
    """The column name when `series` is `frame[name]`, as pandas recognises for a groupby key."""
    node = frame._graph[series._node]
    if node.op == "getitem" and node.inputs == (frame._node,):
        return node.params["key"]
    return None


def _dtype_name(dtype: Any) -> str:
    return dtype if isinstance(dtype, str) else str(_pandas.api.types.pandas_dtype(dtype))


def _node_of(graph: Graph, value: Any) -> int:
    """The node of a lazy value, or a new constant node for a plain one."""
    if isinstance(value, _Lazy):
        if value._graph is not graph:
            raise ValueError("values from two different tasks cannot be combined")
        return value._node
    return graph.add("const", value=value)
