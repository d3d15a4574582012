"""Fixed-point encoding of numbers into integers modulo 2^64, and back for the sum.

`encode` gives one word per value (learning's large vectors); `encode_wide` two, a high and a
low part that are summed separately, so an analytics sum keeps 9 decimal digits of values up to
about 10^19 (and integers exactly) without a wider modulus.
"""

from __future__ import annotations

import numpy as np

LIMIT = 2.0**63
SPLIT = 2**32  # encode_wide: value = high * SPLIT + low, 0 <= low < SPLIT


class FixedPointOverflow(ValueError):
    """A value too large for the fixed-point sum. Its message names no value; `index` (the
    first such value's place in the vector) is for the caller to say which output it is."""

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


def _refuse(fits: np.ndarray, precision: int, max_clients: int, bound: str,
            offset: int = 0) -> None:
    raise FixedPointOverflow(
        f"a value does not fit: |x| * 10^{precision} * {max_clients} workers must stay below "
        f"{bound}; lower the task's precision or scale the values",
        offset + int(np.flatnonzero(~fits)[0]))


def encode(x: np.ndarray, precision: int, max_clients: int) -> np.ndarray:
    """The values of `x` scaled by 10^precision as uint64 (two's complement); refuses values
    whose sum over `max_clients` workers could leave the signed 64-bit range."""
    values = np.asarray(x).reshape(-1)
    out = np.empty(values.size, dtype=np.uint64)
    encode_into(out, values, 10.0**precision, precision, max_clients)
    return out


def encode_into(out: np.ndarray, x: np.ndarray, scale: float, precision: int, max_clients: int,
                piece: int = 1 << 16, add: bool = False) -> None:
    """`encode(x * scale)` written into the uint64 array `out` (added to it, modulo 2^64, with
    `add`), a cache-sized piece at a time (x * scale with scale = weight * 10^precision, as one
    product)."""
    scaled = np.empty(min(piece, x.size), dtype=np.float64)
    words = np.empty(scaled.size if add else 0, dtype=np.int64)
    signed = out.view(np.int64)
    for start in range(0, x.size, piece):
        part = scaled[:min(piece, x.size - start)]
        np.multiply(x[start:start + part.size], scale, out=part, dtype=np.float64)
        if part.size and not max(-part.min(), part.max()) * max_clients < LIMIT:  # NaN too
            _refuse(np.abs(part) * max_clients < LIMIT, precision, max_clients, "2^63", start)
        np.rint(part, out=part)
        if add:
            np.copyto(words[:part.size], part, casting="unsafe")
            np.add(signed[start:start + part.size], words[:part.size],
                   out=signed[start:start + part.size])
        else:
            np.copyto(signed[start:start + part.size], part, casting="unsafe")


def add_integers(out: np.ndarray, values: np.ndarray, precision: int, max_clients: int) -> None:
    """Values already in fixed point (int64, such as noised ones) added onto the uint64 array
    `out`, modulo 2^64; refuses values whose sum over `max_clients` workers could leave the
    signed 64-bit range."""
    fits = np.abs(values.astype(np.float64)) * max_clients < LIMIT
    if not fits.all():
        _refuse(fits, precision, max_clients, "2^63")
    signed = out.view(np.int64)
    np.add(signed, values, out=signed)


def decode(total: np.ndarray, precision: int) -> np.ndarray:
    """The float64 value of a uint64 sum of encoded vectors."""
    return total.view(np.int64) / 10.0**precision


def encode_wide(x: np.ndarray, precision: int, max_clients: int) -> np.ndarray:
    """`x` (finite floats, or integers kept exact) times 10^precision as 2n words: the signed
    high parts, then the low parts. Refuses values whose high parts could overflow a sum over
    `max_clients` workers."""
    return encode_exact(exact(x, precision, max_clients), precision, max_clients)


def exact(x: np.ndarray, precision: int, max_clients: int) -> list[int]:
    """The Python integers rint(x * 10^precision) of finite floats, or integers as they are:
    what `encode_exact` takes, after any noise is added to them."""
    if x.dtype.kind in "iub":
        return x.astype(np.int64).tolist()
    scaled = np.rint(np.multiply(x, 10.0**precision, dtype=np.float64))
    finite = np.isfinite(scaled)
    if not finite.all():
        _refuse(finite, precision, max_clients, "2^95")
    return [int(value) for value in scaled.tolist()]


def encode_exact(values: list[int], precision: int, max_clients: int) -> np.ndarray:
    """Integers of any size as 2n words, the signed high parts (value >> 32), then the low
    ones, which sum separately; refuses values whose high parts could overflow a sum over
    `max_clients` workers (`precision` is for the message)."""
    high = [value >> 32 for value in values]
    fits = np.array([abs(h) * max_clients < 2**63 for h in high], dtype=bool)
    if not fits.all():
        _refuse(fits, precision, max_clients, "2^95")
    low = [value & (SPLIT - 1) for value in values]
    return np.array(high + low, dtype=np.int64).view(np.uint64)


def decode_wide(total: np.ndarray) -> list[int]:
    """The exact integer sums of a sum of `encode_wide` vectors (still times 10^precision)."""
    n = total.size // 2
    return [high * SPLIT + low for high, low in
            zip(total[:n].view(np.int64).tolist(), total[n:].tolist(), strict=True)]


def decode_in_place(total: np.ndarray, precision: int, piece: int = 1 << 20) -> np.ndarray:
    """`decode`, written over `total`'s own memory piece by piece: its float64 view."""
    signed, decoded = total.view(np.int64), total.view(np.float64)
    for start in range(0, total.size, piece):
        decoded[start:start + piece] = signed[start:start + piece] / 10.0**precision
    return decoded
