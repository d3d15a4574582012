"""Statistics beyond sums and means, each still finished from additive parts of every holder.

- `value_counts`, `histogram`, `crosstab`: counts per value, bin or pair of values. They are
  keyed by their own rows (`Reduction.keys`), so they go the groupby's way: declared values,
  the `min_rows` rule per value or bin, and a fixed layout where the values are declared (a
  histogram's bins always are).
- `skew`, `kurt`: sums of the second to fourth powers of deviations from the previous step's
  mean, corrected for that mean not being exact, as variance is.
- `pairwise_mean`, `cov`, `corr`: pandas' pairwise-complete rows. A first step sums, for each
  pair of columns, each one's values over the rows where both are present (and counts them);
  the second sums products and squares of deviations from those pairwise means.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sdk.analytics.ops import (
    REDUCTIONS,
    Reduction,
    _count,
    _numeric,
    _ratio,
    _total,
    size_parts,
)


def _sizes(data: Any, keys: Any, **_: Any) -> dict[str, Any]:
    return size_parts(data, keys)


def _value_counts(parts: dict[str, Any], normalize: bool = False, sort: bool = True,
                  ascending: bool = False, frame: bool = False, **_: Any) -> pd.Series:
    """Counts per value (per distinct row of a `frame`: a MultiIndex, of one level too, as
    pandas), most frequent first as pandas; ties in order of value (pandas orders them by first
    appearance in the rows, which means nothing across holders)."""
    counts = parts["size"].sort_index()
    if frame and not isinstance(counts.index, pd.MultiIndex):
        counts.index = pd.MultiIndex.from_arrays([counts.index])
    counts = _ratio(counts, counts.sum()).rename("proportion") if normalize \
        else counts.rename("count")
    return counts.sort_values(ascending=ascending, kind="stable") if sort else counts


def _bin_of(rows: pd.Series, bins: list[float], **_: Any) -> pd.Series:
    """Each value's bin as numpy.histogram counts it: [e_i, e_i+1), the last closed on the right;
    -1 for a value outside the edges or missing."""
    values = pd.to_numeric(rows).to_numpy(dtype=np.float64, na_value=np.nan)
    edges = np.asarray(bins, dtype=np.float64)
    codes = np.searchsorted(edges, values, side="right") - 1
    codes[values == edges[-1]] = len(edges) - 2
    codes[(codes < 0) | (codes >= len(edges) - 1) | np.isnan(values)] = -1
    return pd.Series(codes, index=rows.index, dtype="int64")


def _histogram(parts: dict[str, Any], bins: list[float], **_: Any) -> np.ndarray:
    return parts["size"].reindex(range(len(bins) - 1), fill_value=0).to_numpy(dtype=np.int64)


def _crosstab(parts: dict[str, Any], **_: Any) -> pd.DataFrame:
    return parts["size"].unstack(fill_value=0).sort_index().sort_index(axis=1)


def _moment_parts(data: Any, mean: Any, skipna: bool = True,
                  numeric_only: bool = False) -> dict[str, Any]:
    """Sums of the first four powers of the deviations from the mean of every holder's rows."""
    deviation = _numeric(data, numeric_only, "skew() and kurt()") - mean
    return {"count": _count(deviation, None, skipna),
            **{name: _total(deviation**power, None, skipna) for power, name in
               enumerate(("deviations", "squares", "cubes", "fourths"), start=1)}}


def _central(parts: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """n and the sums of the 2nd, 3rd and 4th powers of deviations from the exact mean: the
    mean sent was off by e = sum(d) / n, and sum((d - e)^k) expands in the sums of d^j."""
    n, s1, s2, s3, s4 = (parts[k] for k in ("count", "deviations", "squares", "cubes",
                                            "fourths"))
    e = _ratio(s1, n)
    m2 = np.maximum(s2 - s1 * e, 0)
    m3 = s3 - 3 * e * s2 + 2 * n * e**3
    m4 = s4 - 4 * e * s3 + 6 * e**2 * s2 - 3 * n * e**4
    return n, m2, m3, m4


def _where_enough(result: Any, n: Any, fewest: int) -> Any:
    """`result`, NaN where fewer than `fewest` values count."""
    if isinstance(result, (pd.Series, pd.DataFrame)):
        return result.where(n >= fewest).astype("float64")
    return np.float64(result) if n >= fewest else np.float64(np.nan)


def _skew(parts: dict[str, Any], **_: Any) -> Any:
    """pandas' adjusted Fisher-Pearson skewness: NaN under 3 values or with no spread."""
    n, m2, m3, _m4 = _central(parts)
    with np.errstate(divide="ignore", invalid="ignore"):
        skew = m3 / (m2 * np.sqrt(m2)) * (n * np.sqrt(n - 1.0) / (n - 2.0))
    return _where_enough(skew, n, 3)


def _kurt(parts: dict[str, Any], **_: Any) -> Any:
    """pandas' unbiased excess kurtosis: NaN under 4 values or with no spread."""
    n, m2, _m3, m4 = _central(parts)
    with np.errstate(divide="ignore", invalid="ignore"):
        kurt = (n - 1.0) / ((n - 2.0) * (n - 3.0)) * (n * (n + 1.0) * m4 / (m2 * m2)
                                                       - 3.0 * (n - 1.0))
    return _where_enough(kurt, n, 4)


def _matrix(data: Any, numeric_only: bool) -> tuple[pd.Index, np.ndarray, np.ndarray]:
    """The columns, their values as floats (missing as NaN), and where each is present."""
    data = _numeric(data, numeric_only, "cov() and corr()")
    values = data.to_numpy(dtype=np.float64, na_value=np.nan)
    return data.columns, values, ~np.isnan(values)


def _pairwise_mean_parts(data: Any, numeric_only: bool = False, **_: Any) -> dict[str, Any]:
    """Per pair of columns (i, j), over the rows where both are present: their count, and the
    sum of column i's values."""
    columns, values, present = _matrix(data, numeric_only)
    sums = np.where(present, values, 0.0).T @ present.astype(np.float64)
    return {"count": _pairs(_pair_counts(present), columns), "sum": _pairs(sums, columns)}


def _pair_counts(present: np.ndarray) -> np.ndarray:
    """How many rows hold both columns i and j, per pair."""
    return present.T.astype(np.int64) @ present.astype(np.int64)


def _pairs(matrix: np.ndarray, columns: pd.Index) -> pd.DataFrame:
    return pd.DataFrame(matrix, index=columns, columns=columns)


def _pairwise_mean(parts: dict[str, Any], **_: Any) -> pd.DataFrame:
    return _ratio(parts["sum"], parts["count"])


def _pairwise_parts(data: Any, means: pd.DataFrame, numeric_only: bool = False,
                    **_: Any) -> dict[str, Any]:
    """Per pair (i, j), over the rows where both are present, with d_i = x_i - mean of i over
    those rows (as the first step found it): sum(d_i * d_j), sum(d_i ** 2), sum(d_i), their
    count; and the number of rows (pandas' cov differs where no value is missing)."""
    columns, values, present = _matrix(data, numeric_only)
    centre = means.reindex(index=columns, columns=columns).to_numpy(dtype=np.float64)
    width = len(columns)
    products, squares, deviations = (np.zeros((width, width)) for _ in range(3))
    with np.errstate(invalid="ignore"):
        for i in range(width):
            both = present & present[:, [i]]
            mine = np.where(both, values[:, [i]] - centre[i][None, :], 0.0)
            theirs = np.where(both, values - centre[:, i][None, :], 0.0)
            products[i], squares[i], deviations[i] = ((mine * theirs).sum(0),
                                                      (mine**2).sum(0), mine.sum(0))
    return {"products": _pairs(products, columns), "squares": _pairs(squares, columns),
            "deviations": _pairs(deviations, columns),
            "count": _pairs(_pair_counts(present), columns), "rows": np.int64(len(data))}


def _centred(parts: dict[str, Any]) -> tuple[np.ndarray, ...]:
    """n, sum(a_i * a_j) and sum(a_i ** 2) per pair, with a_i = x_i - the pair's exact mean: 0
    over one row, its own mean, whatever the rounding of the mean it was centred on (summed in
    fixed point, the correction for it would not cancel exactly)."""
    n = parts["count"].to_numpy(dtype=np.float64)
    d = parts["deviations"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        cross = parts["products"].to_numpy() - d * d.T / n
        own = np.maximum(parts["squares"].to_numpy() - d * d / n, 0)
    spread = n > 1
    return n, np.where(spread, cross, 0.0), np.where(spread, own, 0.0)


def _cov(parts: dict[str, Any], ddof: int = 1, min_periods: int | None = None,
         pair: bool = False, **_: Any) -> Any:
    """pandas' cov: numpy.cov's (over n - ddof, infinite at n <= ddof) for a pair of Series or
    a frame with no missing value; otherwise pandas' pairwise one, over n - 1 whatever ddof."""
    n, cross, _own = _centred(parts)
    fewest = 1 if min_periods is None else min_periods
    with np.errstate(divide="ignore", invalid="ignore"):
        if pair or np.all(np.diag(n) == parts["rows"]):
            cov = np.where(n - ddof > 0, cross / (n - ddof), cross * np.inf)
            too_few = n < fewest if pair else np.full(n.shape, parts["rows"] < fewest)
        else:
            cov = np.where(n > 1, cross / (n - 1), np.nan)
            too_few = n < fewest
    cov = np.where(too_few, np.nan, cov)
    if pair:
        return np.float64(cov[0, 1])
    return pd.DataFrame(cov, index=parts["count"].index, columns=parts["count"].columns)


def _corr(parts: dict[str, Any], min_periods: int | None = None, pair: bool = False,
          **_: Any) -> Any:
    """Pearson's r per pair: NaN where a column has no spread over the pair's rows or where
    fewer than min_periods rows hold both; a pair of Series' is clipped to [-1, 1] as pandas."""
    n, cross, own = _centred(parts)
    with np.errstate(divide="ignore", invalid="ignore"):
        divisor = np.sqrt(own * own.T)
        corr = np.where(divisor != 0, cross / divisor, np.nan)
    corr = np.where(n < (1 if min_periods is None else min_periods), np.nan, corr)
    if pair:
        return np.float64(np.nan if n[0, 1] < 2 else np.clip(corr[0, 1], -1.0, 1.0))
    return pd.DataFrame(corr, index=parts["count"].index, columns=parts["count"].columns)


def _own_rows(rows: Any, **_: Any) -> Any:
    return rows


STATISTICS: dict[str, Reduction] = {
    "value_counts": Reduction(_sizes, _value_counts, keys=_own_rows),
    "histogram": Reduction(_sizes, _histogram, keys=_bin_of),
    "crosstab": Reduction(_sizes, _crosstab, keys=_own_rows),
    "skew": Reduction(_moment_parts, _skew),
    "kurt": Reduction(_moment_parts, _kurt),
    "pairwise_mean": Reduction(_pairwise_mean_parts, _pairwise_mean, pairwise=True),
    "cov": Reduction(_pairwise_parts, _cov, pairwise=True),
    "corr": Reduction(_pairwise_parts, _corr, pairwise=True),
}
REDUCTIONS.update(STATISTICS)
