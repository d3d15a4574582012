"""A stage's parts as one fixed-point vector for secure aggregation, and the summed vector back.

Each worker first sends the *layout* of its parts: their labels, columns and dtypes with every
value zero. The coordinator adds the layouts as it would add the parts (union of labels, dtype
promotion) and hands the union back; each worker puts its parts on it (a label it lacks counts
as 0, as in plain addition) and encodes them: integers exactly, floats times 10^precision, and
for each float a count of NaN, +inf and -inf, so that they propagate as pandas' sum would.
Summed vectors decode to the same parts that adding every worker's parts in the clear gives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import reduce
from typing import Any

import numpy as np
import pandas as pd

from sdk.analytics.ops import add_parts
from sdk.analytics.plan import Parts
from sdk.secagg import fixedpoint

SPECIAL_BITS = 20  # per count of NaN, +inf, -inf in a float's special word: up to 2^20 workers
MAX_WORKERS = 1 << SPECIAL_BITS


def layout(parts: Parts) -> Parts:
    """The parts with every value zero: what the coordinator learns of a worker's parts."""
    return {node: {name: _zeros(value) for name, value in named.items()}
            for node, named in parts.items()}


def check_layout(layout: Any, nodes: list[int]) -> None:
    """ValueError unless `layout` is the layout of parts of the reductions `nodes`, each a
    scalar, Series or DataFrame of numbers: what a worker's answer must be."""
    if not isinstance(layout, dict) or sorted(layout) != sorted(nodes):
        raise ValueError(f"its layout is not one of the parts of reductions {sorted(nodes)}")
    for named in layout.values():
        if not isinstance(named, dict) or not all(isinstance(k, str) for k in named):
            raise ValueError("its layout does not name its parts")
        for value in named.values():
            if isinstance(value, (dict, list, tuple, str, bytes)) or value is None:
                raise ValueError(f"its layout holds a {type(value).__name__}, not a number, "
                                 "Series or DataFrame")
    try:
        vector_length(layout)
    except (TypeError, AttributeError) as error:
        raise ValueError(f"its layout cannot be summed: {error}") from None


def same_layout(a: Parts, b: Parts) -> bool:
    """Whether two layouts name the same parts with the same labels and dtypes (in any order),
    so that each value is encoded alike."""
    if sorted(a) != sorted(b) or any(sorted(a[node]) != sorted(b[node]) for node in a):
        return False
    for node, named in a.items():
        for name, x in named.items():
            y = b[node][name]
            if type(x) is not type(y):
                return False
            if isinstance(x, pd.DataFrame):
                same = (x.index.equals(y.index) and x.columns.equals(y.columns)
                        and list(x.dtypes) == list(y.dtypes))
            elif isinstance(x, pd.Series):
                same = x.index.equals(y.index) and x.dtype == y.dtype
            else:
                same = _scalar_dtype(x) == _scalar_dtype(y)
            if not same:
                return False
    return True


def restrict(parts: Parts, union_layout: Parts) -> Parts:
    """The summed parts on the labels and dtypes of a smaller union: the layouts of the workers
    whose input was summed, without labels only a dropped worker had."""
    return {node: {name: _cast(_align(parts[node][name], shape), shape)
                   for name, shape in named.items()}
            for node, named in union_layout.items()}


def _cast(part: Any, shape: Any) -> Any:
    if isinstance(shape, (pd.DataFrame, pd.Series)):
        dtypes = shape.dtypes if isinstance(shape, pd.DataFrame) else shape.dtype
        return part.astype(dtypes)
    return part


def union(layouts: list[Parts]) -> Parts:
    """The layout every worker's parts are put on; ValueError if they name different parts."""
    names = [{node: sorted(named) for node, named in lay.items()} for lay in layouts]
    if any(n != names[0] for n in names):
        raise ValueError("the workers' parts name different reductions; they cannot be added")
    return {node: {name: reduce(add_parts, (lay[node][name] for lay in layouts))
                   for name in named}
            for node, named in names[0].items()}


def vector_length(union_layout: Parts) -> int:
    """Words in the vector of a stage: integers take 2, floats 4 (2 for the value, 2 for the
    count of specials)."""
    return sum(len(values) * (4 if _is_float(values) else 2)
               for values in _columns(union_layout))


# Differential privacy's hook: (reduction node, part name, each value's label (a column or a
# key), the values' exact fixed-point integers) -> the integers with this worker's noise added.
NoiseHook = Callable[[int, str, list[Any], list[int]], list[int]]


def encode(parts: Parts, union_layout: Parts, precision: int, max_clients: int,
           noise: NoiseHook | None = None) -> np.ndarray:
    """This worker's parts on `union_layout`, as the uint64 vector whose sum is decoded; with
    `noise`, each value's exact integer goes through it first (a sum in fixed point may pass
    2^63, so these are Python integers). Noise needs finite values: NaN and infinities, which
    travel as counts, would be released without it."""
    if max_clients >= MAX_WORKERS:
        raise ValueError(f"secure analytics supports fewer than {MAX_WORKERS} workers")
    aligned = {node: {name: _align(parts[node][name], value) for name, value in named.items()}
               for node, named in union_layout.items()}
    integers: list[int] = []
    scaled: list[int] = []
    specials, float_parts = [], []
    for values, shape, part, labels in zip(_columns(aligned), _columns(union_layout),
                                           _part_names(union_layout), _labels(union_layout),
                                           strict=True):
        if _is_float(shape):
            float_parts += [part] * len(values)
            number = pd.array(values).to_numpy(dtype=np.float64, na_value=np.nan)
            specials.append(np.isnan(number) * 1 + (number == np.inf) * (1 << SPECIAL_BITS)
                            + (number == -np.inf) * (1 << 2 * SPECIAL_BITS))
            try:
                exact = fixedpoint.exact(np.where(np.isfinite(number), number, 0.0), precision,
                                         max_clients)
            except fixedpoint.FixedPointOverflow as error:
                raise _overflow(part, error) from None
            target = scaled
        else:
            exact, target = np.asarray(values, dtype=np.int64).tolist(), integers
        target += exact if noise is None else noise(*part, labels, exact)
    special = np.concatenate(specials + [np.zeros(0, np.int64)]).astype(np.int64).tolist()
    if noise is not None and any(special):
        raise ValueError("under differential privacy every value released must be finite, and "
                         "one of this step's is NaN or infinite")
    try:
        fractional = fixedpoint.encode_exact(scaled, precision, max_clients)
    except fixedpoint.FixedPointOverflow as error:
        raise _overflow(float_parts[error.index], error) from None
    return np.concatenate([fixedpoint.encode_exact(integers + special, 0, max_clients),
                           fractional])


def _overflow(part: tuple[int, str], error: fixedpoint.FixedPointOverflow) -> Exception:
    node, name = part
    return fixedpoint.FixedPointOverflow(f"the {name!r} part of reduction node {node}: {error}",
                                         error.index)


def decode(total: np.ndarray, union_layout: Parts, precision: int) -> Parts:
    """The summed parts from the unmasked total of every worker's `encode`."""
    shapes = list(_columns(union_layout))
    n_floats = sum(len(s) for s in shapes if _is_float(s))
    n_whole = sum(len(s) for s in shapes if not _is_float(s)) + n_floats
    whole = iter(fixedpoint.decode_wide(total[:2 * n_whole]))
    scaled = fixedpoint.decode_wide(total[2 * n_whole:])
    integer_columns = [[next(whole) for _ in range(len(s))] for s in shapes if not _is_float(s)]
    special = [next(whole) for _ in range(n_floats)]
    floats = iter([_float(value, count, precision)
                   for value, count in zip(scaled, special, strict=True)])
    integer_iter = iter(integer_columns)
    columns = iter([
        _column([next(floats) for _ in range(len(s))], s) if _is_float(s)
        else _column(next(integer_iter), s) for s in shapes])
    return {node: {name: _rebuild(value, columns) for name, value in named.items()}
            for node, named in union_layout.items()}


def _float(scaled: int, special: int, precision: int) -> float:
    mask = (1 << SPECIAL_BITS) - 1
    nan, positive, negative = (special >> (SPECIAL_BITS * i) & mask for i in range(3))
    if nan or (positive and negative):
        return np.nan
    if positive or negative:
        return np.inf if positive else -np.inf
    return scaled / 10**precision


def _column(values: list, shape: Any) -> Any:
    """`values` as an array of the layout column's dtype."""
    dtype = shape.dtype
    if isinstance(dtype, np.dtype):
        return np.array(values, dtype=np.float64 if _is_float(shape) else np.int64).astype(dtype)
    if _is_float(shape) and dtype.kind in "iub":  # a nullable integer column summed with NA
        values = [v if np.isnan(v) else round(v) for v in values]
    return pd.array(np.array(values, dtype=np.float64), dtype=dtype)


def _columns(parts: Parts) -> Iterator[Any]:
    """Every one-dimensional array of values in the parts, in a fixed order."""
    for named in parts.values():
        for value in named.values():
            if isinstance(value, pd.DataFrame):
                yield from (_array(value.iloc[:, i]) for i in range(value.shape[1]))
            elif isinstance(value, pd.Series):
                yield _array(value)
            else:
                yield np.array([value], dtype=_scalar_dtype(value))


def _array(series: pd.Series) -> Any:
    """A Series' values: a numpy array where pandas keeps them in one (so that integers are
    summed as integers), its extension array otherwise (nullable values)."""
    array = series.array
    return array.to_numpy() if isinstance(array, pd.arrays.NumpyExtensionArray) else array


def _part_names(parts: Parts) -> Iterator[tuple[int, str]]:
    """(reduction node, part name) of each array `_columns` gives, in the same order."""
    for node, named in parts.items():
        for name, value in named.items():
            yield from [(node, name)] * (value.shape[1] if isinstance(value, pd.DataFrame) else 1)


def _labels(parts: Parts) -> Iterator[list[Any]]:
    """The label of each value of each array `_columns` gives: its column in a DataFrame, its
    index label in a Series (a column, or a key), None for a scalar."""
    for named in parts.values():
        for value in named.values():
            if isinstance(value, pd.DataFrame):
                yield from ([column] * len(value) for column in value.columns)
            elif isinstance(value, pd.Series):
                yield list(value.index)
            else:
                yield [None]


def _is_float(values: Any) -> bool:
    """True unless the values are plain numpy integers or bools, which are summed exactly."""
    dtype = values.dtype
    if not isinstance(dtype, np.dtype) or dtype.kind == "f":
        if not (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)):
            raise TypeError(f"parts of dtype {dtype} cannot be summed securely")
        return True
    if dtype.kind not in "iub":
        raise TypeError(f"parts of dtype {dtype} cannot be summed securely")
    return False


def _scalar_dtype(value: Any) -> np.dtype:
    if value is None or value is pd.NA:
        return np.dtype(np.float64)
    return np.asarray(value).dtype


def _zeros(value: Any) -> Any:
    if isinstance(value, pd.DataFrame):
        frame = pd.DataFrame({i: _zeros(value.iloc[:, i]) for i in range(value.shape[1])},
                             index=value.index)
        frame.columns = value.columns
        return frame
    if isinstance(value, pd.Series):
        return pd.Series(0, index=value.index, dtype=value.dtype, name=value.name)
    return _scalar_dtype(value).type(0)


def _align(part: Any, shape: Any) -> Any:
    """`part` on the labels of its union layout, 0 where it lacks one."""
    if isinstance(shape, pd.DataFrame):
        return part.reindex(index=shape.index, columns=shape.columns, fill_value=0)
    if isinstance(shape, pd.Series):
        return part.reindex(shape.index, fill_value=0)
    return part


def _rebuild(shape: Any, columns: Iterator[Any]) -> Any:
    """A part of `shape`'s kind, labels and dtypes, with the next decoded columns as values."""
    if isinstance(shape, pd.DataFrame):
        frame = pd.DataFrame({i: next(columns) for i in range(shape.shape[1])}, index=shape.index)
        frame.columns = shape.columns
        return frame
    if isinstance(shape, pd.Series):
        return pd.Series(next(columns), index=shape.index, name=shape.name)
    return next(columns)[0]
