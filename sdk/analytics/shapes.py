"""How `agg` puts several results together in pandas' shape, on the coordinator.

Each reduction that an `agg` names is computed as its own node; a `combine` node then lays
their results out as pandas' `agg` would, column by column where pandas works column by column
(so that each column's dtype is the one pandas infers from that column's results).
"""

from __future__ import annotations

from typing import Any

import pandas as pd


def combine(form: str, labels: list[Any], results: list[Any], name: Any = None) -> Any:
    """The results of the reductions named by `labels`, in the shape of `form`:

    - "series": scalars, one per label, the Series named `name` (Series.agg(list),
      DataFrame.agg({column: name}));
    - "rows": per-column Series, one per reduction name: a row per name (DataFrame.agg(list));
    - "table": scalars per (column, name): a column per column, a row per name, NaN where a
      column does not have the reduction (DataFrame.agg({column: [names]}));
    - "columns": per-key Series, a column each, (column, name) tuples making a MultiIndex
      (SeriesGroupBy.agg(list), DataFrameGroupBy.agg(dict));
    - "by_column": per-key DataFrames, one per name: columns (column, name), column-major
      (DataFrameGroupBy.agg(list)).
    """
    if form == "series":
        return pd.Series(results, index=labels, name=name)
    if form == "rows":
        return pd.DataFrame({column: pd.Series([r[column] for r in results], index=labels)
                             for column in results[0].index})
    if form == "table":
        names = list(dict.fromkeys(name for _, name in labels))
        columns = list(dict.fromkeys(column for column, _ in labels))
        return pd.DataFrame({column: pd.Series({name: r for (c, name), r in zip(labels, results, strict=True)
                                                if c == column}) for column in columns}
                            ).reindex(names)
    if form == "columns":
        return pd.DataFrame(dict(zip(labels, results, strict=True)))
    if form == "by_column":
        return pd.DataFrame({(column, name): r[column] for column in results[0].columns
                             for name, r in zip(labels, results, strict=True)})
    raise ValueError(f"unknown agg form {form!r}")
