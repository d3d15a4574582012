"""Fixed-point encoding of numbers into words modulo 2^64 (or 2^32), and back for the sum.

`encode` gives one word per value (learning's large vectors); `encode_wide` two, a high and a
low part that are summed separately, so an analytics sum keeps 9 decimal digits of values up to
about 10^19 (and integers exactly) without a wider modulus. The word is the output array's
dtype (uint64, or uint32 for a vector whose values are known to be small: half the bytes); a
value whose sum over `max_clients` workers could leave the word's signed range is refused,
never wrapped.
"""

from __future__ import annotations

import numpy as np

WORDS = {32: np.dtype(np.uint32), 64: np.dtype(np.uint64)}  # word dtype by bits


def _limit(words: np.dtype) -> float:
    """The signed range of a word: a sum's magnitude must stay below it."""
    return 2.0 ** (8 * words.itemsize - 1)


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


def signed(words: np.ndarray) -> np.ndarray:
    """The two's-complement view of uint32 or uint64 words."""
    return words.view(np.dtype(f"i{words.dtype.itemsize}"))


def encode_into(out: np.ndarray, x: np.ndarray, scale: float, precision: int, max_clients: int,
                piece: int = 1 << 16, add: bool = False, minus: np.ndarray | None = None) -> None:
    """`encode(x * scale)` written into the uint64 or uint32 array `out` (added to it, modulo
    2^64 or 2^32, with `add`), a cache-sized piece at a time (x * scale with scale = weight *
    10^precision, as one product); with `minus`, (x - minus) * scale, the difference taken in
    float64."""
    scaled = np.empty(min(piece, x.size), dtype=np.float64)
    ints = signed(out)
    words = np.empty(scaled.size if add else 0, dtype=ints.dtype)
    limit = _limit(out.dtype)
    for start in range(0, x.size, piece):
        part = scaled[:min(piece, x.size - start)]
        if minus is None:
            np.multiply(x[start:start + part.size], scale, out=part, dtype=np.float64)
        else:
            np.subtract(x[start:start + part.size], minus[start:start + part.size], out=part,
                        dtype=np.float64)
            np.multiply(part, scale, out=part)
        if part.size and not max(-part.min(), part.max()) * max_clients < limit:  # NaN too
            _refuse(np.abs(part) * max_clients < limit, precision, max_clients,
                    f"2^{8 * out.itemsize - 1}", start)
        np.rint(part, out=part)
        if add:
            np.copyto(words[:part.size], part, casting="unsafe")
            np.add(ints[start:start + part.size], words[:part.size],
                   out=ints[start:start + part.size])
        else:
            np.copyto(ints[start:start + part.size], part, casting="unsafe")


def add_integers(out: np.ndarray, values: np.ndarray, precision: int, max_clients: int) -> None:
    """Values already in fixed point (int64, such as noised ones) added onto the uint64 array
    `out`, modulo 2^64; refuses values whose sum over `max_clients` workers could leave the
    signed 64-bit range."""
    fits = np.abs(values.astype(np.float64)) * max_clients < _limit(out.dtype)
    if not fits.all():
        _refuse(fits, precision, max_clients, f"2^{8 * out.itemsize - 1}")
    ints = signed(out)
    np.add(ints, values.astype(ints.dtype, copy=False), out=ints)


def decode(total: np.ndarray, precision: int) -> np.ndarray:
    """The float64 value of a uint64 (or uint32) sum of encoded vectors."""
    return signed(total) / 10.0**precision


def encode_wide(x: np.ndarray, precision: int, max_clients: int, bits: int = 64) -> np.ndarray:
    """`x` (finite floats, or integers kept exact) times 10^precision as 2n words of `bits`:
    the signed high parts, then the low parts. Refuses values whose high parts could overflow a
    sum over `max_clients` workers."""
    return encode_exact(exact(x, precision, max_clients), precision, max_clients, bits)


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


def encode_exact(values: list[int], precision: int, max_clients: int,
                 bits: int = 64) -> np.ndarray:
    """Integers of any size as 2n words of `bits`, the signed high parts (value >> bits/2),
    then the low ones (below 2^(bits/2)), which sum separately; refuses values whose high parts
    could overflow a sum over `max_clients` workers (`precision` is for the message)."""
    half = bits // 2
    if max_clients >= 2**half:
        raise ValueError(f"{max_clients} workers' low parts overflow {bits}-bit words")
    high = [value >> half for value in values]
    fits = np.array([abs(h) * max_clients < 2 ** (bits - 1) for h in high], dtype=bool)
    if not fits.all():
        _refuse(fits, precision, max_clients, f"2^{bits - 1 + half}")
    low = [value & (2**half - 1) for value in values]
    return np.array(high + low, dtype=f"i{bits // 8}").view(WORDS[bits])


def decode_wide(total: np.ndarray) -> list[int]:
    """The exact integer sums of a sum of `encode_wide` vectors (still times 10^precision)."""
    n, split = total.size // 2, 2 ** (4 * total.itemsize)
    return [high * split + low for high, low in
            zip(signed(total[:n]).tolist(), total[n:].tolist(), strict=True)]


def decode_in_place(total: np.ndarray, precision: int, piece: int = 1 << 20) -> np.ndarray:
    """`decode`, written over `total`'s own memory piece by piece: its float64 view."""
    ints, decoded = total.view(np.int64), total.view(np.float64)
    for start in range(0, total.size, piece):
        decoded[start:start + piece] = ints[start:start + piece] / 10.0**precision
    return decoded
