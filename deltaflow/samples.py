"""Sample data for the demo, examples and tests."""

from __future__ import annotations

import numpy as np
import pandas as pd


def wages(rows: int, seed: int, nan_fraction: float = 0.1) -> pd.DataFrame:
    """A synthetic table of ages, wages and weekly hours, with some wages missing."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "age": rng.integers(20, 65, rows),
        "wage": rng.normal(5000, 800, rows).round(2),
        "hours": rng.normal(40, 5, rows).round(1),
    })
    frame.loc[rng.random(rows) < nan_fraction, "wage"] = np.nan
    return frame
