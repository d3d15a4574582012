"""Fixed-point encoding of float vectors into integers modulo 2^64, and back for the sum."""

from __future__ import annotations

import numpy as np

LIMIT = 2.0**63


def encode(x: np.ndarray, precision: int, max_clients: int) -> np.ndarray:
    """`x` scaled by 10^precision as uint64 (two's complement); refuses values whose sum over
    `max_clients` workers could leave the signed 64-bit range."""
    scaled = np.multiply(x, 10.0**precision, dtype=np.float64)
    if scaled.size and not max(-scaled.min(), scaled.max()) * max_clients < LIMIT:  # NaN too
        bad = np.flatnonzero(~(np.abs(scaled) * max_clients < LIMIT))
        i = int(bad[0])
        raise ValueError(
            f"value {float(np.asarray(x)[i])} at index {i} does not fit: |x| * 10^{precision} * "
            f"{max_clients} workers must stay below 2^63 ({bad.size} out of range)")
    return np.rint(scaled, out=scaled).astype(np.int64).view(np.uint64)


def decode(total: np.ndarray, precision: int) -> np.ndarray:
    """The float64 value of a uint64 sum of encoded vectors."""
    return total.view(np.int64) / 10.0**precision
