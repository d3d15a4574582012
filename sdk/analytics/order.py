"""Order statistics (quantile, median, min, max) by bisection on counts summed across holders.

Every non-missing value maps to a 64-bit key whose order is the values' (`keys`): float64's bit
pattern, flipped so that negatives come first. One order statistic, the k-th smallest value, is
found by descending a tree over the keys: each step splits the current interval of keys into
`BUCKETS` buckets and every holder counts its values in each and below the interval (2^BITS
thresholds), the counts are summed (securely by default), and the coordinator keeps the bucket
where the running count reaches k. After `STEPS` steps the interval is one key: the exact value.

A statistic is a chain of `STEPS` reductions of kind `order_search` in the graph, each taking the
previous one's *state* (the interval each target rank is in) as its aggregate input, so the
engine's stages carry the search and a task's steps are fixed by its signed graph. The first
step is shared by every target (all start at the whole key range) and also counts the values;
later steps count per target. Each target is one rank: `quantile(q)` needs two (the values it
interpolates between), min one (k = 1), max one (k = n).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from sdk.analytics.errors import EvaluationError

BITS = 8  # key bits settled per step
BUCKETS = 1 << BITS
STEPS = 64 // BITS  # steps of a search: a float64 median takes 8 rounds
THRESHOLDS = BUCKETS  # per step, target and column: the interval's start and 255 inside it
KIND = "order_search"
GROUPED_KIND = "groupby_order_search"
STATS = ("quantile", "median", "min", "max")
_TOP = np.uint64(1 << 63)
_UNNAMED = "\x00unnamed"  # the column label of a Series without a name


def keys(values: np.ndarray) -> np.ndarray:
    """The uint64 keys of float64 values (no NaN), in the same order; -0.0 counts as 0.0."""
    bits = (np.asarray(values, dtype=np.float64) + 0.0).view(np.uint64)
    return np.where(bits & _TOP, ~bits, bits | _TOP)


def value_of(key: int) -> float:
    """The float64 whose key is `key`."""
    key = np.uint64(key)
    bits = key & ~_TOP if key & _TOP else ~key
    return float(np.array([bits], dtype=np.uint64).view(np.float64)[0])


def check(node_id: int, params: dict[str, Any], inputs: int, grouped: bool) -> None:
    """ValueError unless a search node's parameters are ones the SDK writes: a known
    statistic, a step of the search (fed the previous step's state after the first), and for a
    quantile a list of q in [0, 1]."""
    q, step = params.get("q"), params.get("step")
    valid = (params.get("stat") in STATS and isinstance(step, int) and 0 <= step < STEPS
             and inputs == (1 if step == 0 else 2) + grouped
             and (q is None) == (params["stat"] != "quantile")
             and (q is None or isinstance(q, list) and 0 < len(q) and all(
                 isinstance(v, float) and 0 <= v <= 1 for v in q)))
    if not valid:
        raise ValueError(f"order search node {node_id} has parameters the SDK does not write")


def data_inputs(inputs: tuple[int, ...], step: int) -> tuple[int, ...]:
    """A search node's inputs less the previous step's state: its values (and keys)."""
    return inputs if step == 0 else inputs[:-1]


def targets(stat: str, q: list[float] | None) -> int:
    """How many ranks the statistic searches for."""
    return 1 if stat in ("min", "max") else 2 * len(q or [0.5])


def probes(params: dict[str, Any]) -> int:
    """The thresholds one step of a search counts against, per column."""
    shared = params["step"] == 0
    return THRESHOLDS * (1 if shared else targets(params["stat"], params.get("q")))


def released_parts(params: dict[str, Any]) -> tuple[str, ...]:
    """The parts one step releases: the counts of values and of the shared first buckets, then
    each target's buckets."""
    if params["step"] == 0:
        return ("count", "b0")
    return tuple(f"b{t}" for t in range(targets(params["stat"], params.get("q"))))


def is_count(part: str) -> bool:
    """Whether a part of an order search is a count (one row moves it by at most 1)."""
    return part == "count" or part[:1] == "b" and part[1:].isdigit()


# A holder's side.

def parts(data: Any, state: dict[str, Any] | None = None, *, stat: str, step: int,
          numeric_only: bool = False, **_: Any) -> dict[str, Any]:
    """This holder's counts of values below and in each bucket of each target's interval (the
    whole key range at step 0, with the count of values and a zero row of the columns' dtypes),
    one column per column searched."""
    frame = _numbers(data, stat, numeric_only)
    values = frame.to_numpy(dtype=np.float64, na_value=np.nan).reshape(frame.shape)
    dtypes = [_dtype(data, c) for c in frame.columns]
    return _search(frame.columns, [column[~np.isnan(column)] for column in values.T], dtypes,
                   state, step)


def grouped_parts(data: Any, groups: pd.Series, state: dict[str, Any] | None = None, *,
                  stat: str, step: int, **_: Any) -> dict[str, Any]:
    """The same counts per key of a Series grouped by `groups`: one column per key, named by
    the keys (and the Series' name on the count), sorted as pandas' groupby sorts them."""
    if not isinstance(data, pd.Series):
        raise EvaluationError(f"a grouped {stat}() searches one column: select it, "
                              "g['x'].median()")
    _numbers(data.to_frame(), stat, False)
    groups = groups if groups.index.equals(data.index) else groups.reindex(data.index)
    codes, labels = pd.factorize(groups, sort=True)
    values = data.to_numpy(dtype=np.float64, na_value=np.nan)
    present = ~np.isnan(values)
    found = _search(pd.Index(labels, name=groups.name),
                    [values[present & (codes == i)] for i in range(len(labels))],
                    [_dtype(data, None)] * len(labels), state, step)
    if "count" in found:
        found["count"].name = data.name
    return found


def _search(labels: pd.Index, columns: list[np.ndarray], dtypes: list[np.dtype],
            state: dict[str, Any] | None, step: int) -> dict[str, Any]:
    """The parts of one step over the values of each labelled column (no NaN)."""
    width_bits = 64 - BITS * step  # the interval's size is 2^width_bits
    lows = np.zeros((1, len(labels)), np.uint64) if state is None else _lows(state, labels)
    column_keys = [keys(column) for column in columns]
    found = {}
    for target, row in enumerate(lows):
        counts = np.column_stack([_counts(key, low, width_bits)
                                  for key, low in zip(column_keys, row)] or
                                 [np.zeros((BUCKETS + 1, 0), np.int64)])
        found[f"b{target}"] = pd.DataFrame(counts, index=pd.RangeIndex(-1, BUCKETS),
                                           columns=labels, dtype="int64")
    if step == 0:
        found["count"] = pd.Series([len(k) for k in column_keys], index=labels, dtype="int64")
        found["zero"] = pd.DataFrame({i: np.zeros(1, dtype) for i, dtype in enumerate(dtypes)})
        found["zero"].columns = labels
    return found


def _counts(key: np.ndarray, low: np.uint64, width_bits: int) -> np.ndarray:
    """The count of keys below `low`, then in each bucket of [low, low + 2^width_bits)."""
    offset = key[key >= low] - low
    if width_bits < 64:
        offset = offset[(offset >> np.uint64(width_bits)) == 0]
    bucket = (offset >> np.uint64(width_bits - BITS)).astype(np.int64)
    below = np.count_nonzero(key < low)  # counted afresh, so noise never accumulates
    return np.concatenate([[below], np.bincount(bucket, minlength=BUCKETS)])


def _numbers(data: Any, stat: str, numeric_only: bool) -> pd.DataFrame:
    """The values as a frame, one column per column searched; text (and bools in a quantile,
    as pandas) refused."""
    frame = data.to_frame(_UNNAMED if data.name is None else data.name) if isinstance(
        data, pd.Series) else data
    if numeric_only:
        frame = frame.select_dtypes(include=["number", "bool"])
    for column, dtype in frame.dtypes.items():
        boolean = pd.api.types.is_bool_dtype(dtype)
        if not (pd.api.types.is_numeric_dtype(dtype) or boolean):
            raise EvaluationError(f"{stat}() needs numeric values, and column {column!r} is "
                                  f"{dtype}; select numeric columns or pass numeric_only=True")
        if boolean and stat == "quantile":
            raise EvaluationError(f"quantile() of bool column {column!r} is refused, as pandas "
                                  "refuses it; cast it with astype(int)")
    return frame


def _dtype(data: Any, column: Any) -> np.dtype:
    """The numpy dtype a column's min and max keep (float64 for nullable ones)."""
    dtype = data.dtype if isinstance(data, pd.Series) else data.dtypes[column]
    return dtype if isinstance(dtype, np.dtype) else np.dtype(np.float64)


def _lows(state: Any, columns: pd.Index) -> np.ndarray:
    """The low end of each target's interval, per column, from the state the coordinator sent."""
    lows = state.get("lo") if isinstance(state, dict) else None
    array = lows.to_numpy() if isinstance(lows, pd.DataFrame) else None
    if array is None or array.dtype != np.uint64:
        raise EvaluationError("the order search's state is not a table of uint64 keys: refused")
    positions = lows.columns.get_indexer(columns)
    if (positions < 0).any():
        raise EvaluationError(f"the order search's state lacks column(s) "
                              f"{list(columns[positions < 0])}: refused")
    return array[:, positions]


# The coordinator's side.

def finalize(total: dict[str, Any], state: dict[str, Any] | None = None, *, stat: str, step: int,
             q: list[float] | None = None, scalar: bool = True, series: bool = True,
             grouped: bool = False, **_: Any) -> Any:
    """The next state of the search from the summed counts; after the last step, the
    statistic itself, shaped as pandas gives it."""
    if state is None:
        state = _start(total, stat, q)
    shift = 64 - BITS * (step + 1)
    lows = state["lo"].to_numpy(dtype=np.uint64, copy=True)  # the input stays as it was
    ranks = state["rank"].to_numpy(dtype=np.int64)
    for target, position in np.ndindex(lows.shape):
        counts = total[f"b{0 if step == 0 else target}"]
        column = state["lo"].columns[position]
        below, *inside = (counts[column].to_numpy(dtype=np.int64) if column in counts.columns
                          else np.zeros(BUCKETS + 1, np.int64))
        reached = np.flatnonzero(below + np.cumsum(inside) >= ranks[target, position])
        bucket = int(reached[0]) if len(reached) else BUCKETS - 1
        lows[target, position] += np.uint64(bucket << shift)
    lows = pd.DataFrame(lows, columns=state["lo"].columns)
    state = {**state, "lo": lows}
    if step < STEPS - 1:
        return state
    result = _result(state, stat, q, scalar, series and not grouped, grouped)
    if not grouped:
        return result
    result.index, result.name = state["n"].index, state["n"].name  # per key, as pandas names it
    return result.sort_index()


def grouped_finalize(total: dict[str, Any], state: dict[str, Any] | None = None,
                     **params: Any) -> Any:
    """`finalize` per key of a grouped search."""
    return finalize(total, state, grouped=True, **params)


def _start(total: dict[str, Any], stat: str, q: list[float] | None) -> dict[str, Any]:
    """The first state: every target at the whole key range, with its rank given the count."""
    n = total["count"]
    columns = n.index
    ranks = pd.DataFrame([[_rank(stat, q, t, int(count)) for count in n]
                          for t in range(targets(stat, q))], columns=columns, dtype="int64")
    zeros = np.zeros(ranks.shape, dtype=np.int64)
    return {"n": n, "rank": ranks, "zero": total.get("zero"),
            "lo": pd.DataFrame(zeros.astype(np.uint64), columns=columns)}


def _rank(stat: str, q: list[float] | None, target: int, n: int) -> int:
    """The 1-based rank target `target` searches for among `n` values (0: none)."""
    if n <= 0:
        return 0
    if stat == "min":
        return 1
    if stat == "max":
        return n
    previous = math.floor(_virtual_index(n, (q or [0.5])[target // 2]))
    return min(previous + 1 + target % 2, n)


def _virtual_index(n: int, q: float) -> float:
    """numpy's linear method: where quantile q falls among n sorted values."""
    return float((np.int64(n) - 1) * np.float64(q))


def _result(state: dict[str, Any], stat: str, q: list[float] | None, scalar: bool,
            series: bool, grouped: bool) -> Any:
    n, lows, zero = state["n"], state["lo"], state["zero"]
    columns = lows.columns

    def found(target: int, position: int) -> float:
        return value_of(lows.iloc[target, position]) if n.iloc[position] > 0 else np.nan

    if stat in ("min", "max"):
        values = [_typed(found(0, p), zero, c) for p, c in enumerate(columns)]
        return values[0] if series else pd.Series(values, index=_labels(columns))
    qs = q or [0.5]
    table = pd.DataFrame(
        [[_interpolate(stat, found(2 * i, p), found(2 * i + 1, p), int(n.iloc[p]), qi, grouped)
          for p in range(len(columns))] for i, qi in enumerate(qs)],
        index=pd.Index(qs, dtype="float64"), columns=_labels(columns), dtype="float64")
    if series:
        column = table.iloc[:, 0]
        column.name = None if columns[0] == _UNNAMED else columns[0]
        return column.iloc[0] if scalar else column
    if scalar:
        row = table.iloc[0]
        row.name = None if stat == "median" else qs[0]
        return row
    return table


def _labels(columns: pd.Index) -> pd.Index:
    return pd.Index([None if c == _UNNAMED else c for c in columns])


def _interpolate(stat: str, lower: float, upper: float, n: int, q: float,
                 grouped: bool) -> float:
    """The value between the two neighbouring order statistics, as pandas computes it: numpy's
    linear interpolation over rows, its own simpler one per group."""
    if n <= 0:
        return np.nan
    index = _virtual_index(n, q)
    gamma = np.float64(index - math.floor(index))
    a, b = np.float64(lower), np.float64(upper)
    with np.errstate(invalid="ignore", over="ignore"):  # as pandas: inf where it overflows
        if stat == "median":
            return float(np.mean([a, b])) if n % 2 == 0 else lower
        difference = b - a
        if grouped:
            return lower if gamma == 0 else float(a + difference * gamma)
        return float(b - difference * (1 - gamma) if gamma >= 0.5 else a + difference * gamma)


def _typed(value: float, zero: pd.DataFrame | None, column: Any) -> Any:
    """A min or max in its column's dtype (every holder's zero row added up gives it), as
    pandas keeps an int or bool column's extremes."""
    if zero is None or column not in zero.columns or np.isnan(value):
        return np.float64(value)
    return zero[column].dtype.type(value)
