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


def regression(rows: int, seed: int) -> dict[str, np.ndarray]:
    """x (4 features) and y = a fixed linear function of x plus noise: arrays for an .npz."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4)).astype(np.float32)
    y = x @ np.array([1.5, -2.0, 0.5, 3.0], dtype=np.float32) + 0.5
    y += rng.normal(scale=0.1, size=rows).astype(np.float32)
    return {"x": x, "y": y[:, None]}
