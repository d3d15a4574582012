"""FedAvg's arithmetic on the coordinator: a running weighted sum of state dicts, in O(model).

Each worker's weights are folded in from the file they were received into, tensor by tensor in
bounded pieces, so memory holds one accumulator per tensor whatever the number of workers. It is
numpy arithmetic on the raw bytes: the coordinator never imports torch.

Floating tensors are averaged in float32 (float64 for float64) and cast back to their dtype,
bfloat16 rounding to nearest even as torch does. Integer tensors (BatchNorm's
`num_batches_tracked`) stay integers: their weighted mean is summed exactly in int64 and rounded
to the nearest integer, halves up; bool tensors become the weighted majority.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sdk import weights
from sdk.proto import task_pb2

PIECE = 16 << 20  # bytes read at a time

# How each dtype is stored on the wire (bfloat16: its 16 bits) and summed.
_STORED = {
    "float32": np.dtype("<f4"), "float16": np.dtype("<f2"), "bfloat16": np.dtype("<u2"),
    "float64": np.dtype("<f8"), "int64": np.dtype("<i8"), "int32": np.dtype("<i4"),
    "int16": np.dtype("<i2"), "int8": np.dtype("i1"), "uint8": np.dtype("u1"),
    "bool": np.dtype("u1"),
}
_FLOATS = {"float32", "float16", "bfloat16", "float64"}


def _accumulator(dtype: str) -> np.dtype:
    if dtype == "float64":
        return np.dtype(np.float64)
    return np.dtype(np.float32) if dtype in _FLOATS else np.dtype(np.int64)


def _widen(stored: np.ndarray, dtype: str) -> np.ndarray:
    """Values as read from the wire, in their accumulator's dtype."""
    if dtype == "bfloat16":
        return (stored.astype(np.uint32) << 16).view(np.float32)
    return stored.astype(_accumulator(dtype), copy=False)


def _to_bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """float32 to bfloat16's 16 bits, rounding to nearest even (NaN stays NaN)."""
    bits = values.astype(np.float32, copy=False).view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(values), np.uint16(0x7FC0), rounded)


class WeightedSum:
    """Σ samples_i × weights_i over the workers folded in so far, and Σ samples_i.

    Made once per task and `reset()` every round: fresh memory is slow to fault in, reused
    memory is not.
    """

    def __init__(self, infos: list[task_pb2.TensorInfo]) -> None:
        self.infos = infos
        self.samples = 0
        self.sums = {info.name: np.zeros(weights.count(info), dtype=_accumulator(info.dtype))
                     for info in infos}
        self._buffer = bytearray(PIECE)
        most: dict[np.dtype, int] = {}  # the most values of a piece, per accumulator dtype
        for name in {info.dtype for info in infos}:
            count = PIECE // _STORED[name].itemsize
            most[_accumulator(name)] = max(most.get(_accumulator(name), 0), count)
        self._scaled = {dtype: np.empty(count, dtype) for dtype, count in most.items()}

    def reset(self) -> None:
        self.samples = 0
        for total in self.sums.values():
            total.fill(0)

    def add_file(self, path: Path, samples: int) -> None:
        """Folds in the state dict stored in `path` (raw bytes in manifest order)."""
        if samples <= 0:
            raise ValueError(f"a worker reported {samples} training samples")
        with open(path, "rb") as handle:
            for info in self.infos:
                stored = _STORED[info.dtype]
                flat = self.sums[info.name]
                remaining = weights.nbytes(info)
                start = 0
                while remaining:
                    take = min(remaining, PIECE - PIECE % stored.itemsize)
                    if handle.readinto(memoryview(self._buffer)[:take]) != take:
                        raise ValueError(f"{path.name} ends inside tensor {info.name!r}")
                    count = take // stored.itemsize
                    values = _widen(np.frombuffer(self._buffer, stored, count), info.dtype)
                    scaled = self._scaled[flat.dtype][:count]
                    np.multiply(values, flat.dtype.type(samples), out=scaled)
                    np.add(flat[start:start + count], scaled, out=flat[start:start + count])
                    start += count
                    remaining -= take
        self.samples += samples

    def write_average(self, path: Path) -> None:
        """Writes Σ samples_i × weights_i / Σ samples_i, in each tensor's own dtype."""
        write_average(path, self.infos, [self.sums[info.name] for info in self.infos],
                      self.samples)


def per_tensor(flat: np.ndarray, infos: list[task_pb2.TensorInfo]) -> list[np.ndarray]:
    """Views of a flat vector of every tensor's values, in manifest order, one per tensor."""
    bounds = np.cumsum([0] + [weights.count(info) for info in infos])
    return [flat[start:end] for start, end in zip(bounds[:-1], bounds[1:], strict=True)]


def write_average(path: Path, infos: list[task_pb2.TensorInfo], totals: list[np.ndarray],
                  samples: int) -> None:
    """Writes each tensor's weighted sum in `totals` divided by `samples`, in the tensor's own
    dtype (by the rules above), as raw bytes in manifest order, a piece at a time. Floating
    totals are divided in place; an integer tensor's total may come as float64 (from secure
    aggregation's fixed point) and is rounded to the integer it encodes."""
    if samples <= 0:
        raise ValueError("no worker was folded in")
    with open(path, "wb") as handle:
        for info, total in zip(infos, totals, strict=True):
            for start in range(0, total.size, PIECE // 8):
                average = _average(info.dtype, total[start:start + PIECE // 8], samples)
                handle.write(memoryview(np.ascontiguousarray(average)).cast("B"))


def _average(dtype: str, total: np.ndarray, samples: int) -> np.ndarray:
    """A piece of a tensor's average, as stored on the wire."""
    if dtype in _FLOATS:
        np.divide(total, total.dtype.type(samples), out=total)
        if dtype == "bfloat16":
            return _to_bfloat16_bits(total)
        return total.astype(_STORED[dtype], copy=False)
    if total.dtype.kind == "f":
        total = np.rint(total).astype(np.int64)
    if dtype == "bool":
        return (2 * total >= samples).astype(np.uint8)
    return ((2 * total + samples) // (2 * samples)).astype(_STORED[dtype])
