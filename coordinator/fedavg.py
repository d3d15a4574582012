"""FedAvg's arithmetic on the coordinator: a running weighted sum of state dicts, in O(model).

Each worker's weights are folded in chunk by chunk as they arrive, so memory holds one
accumulator per tensor whatever the number of workers. It is numpy arithmetic on the raw bytes:
the coordinator never imports torch.

Floating tensors are averaged in float32 (float64 for float64) and cast back to their dtype,
bfloat16 rounding to nearest even as torch does. Integer tensors (BatchNorm's
`num_batches_tracked`) stay integers: their weighted mean is summed exactly in int64 and rounded
to the nearest integer, halves up; bool tensors become the weighted majority.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from coordinator.contributions import StreamedSum
from coordinator.store import Checksum
from sdk import weights
from sdk.proto import task_pb2
from sdk.secagg import fixedpoint
from sdk.secagg.fixedpoint import decode, decode_in_place, decode_wide

PIECE = 16 << 20  # bytes of accumulator averaged and written at a time

# How each dtype is stored on the wire (bfloat16: its 16 bits) and summed.
_STORED = {
    "float32": np.dtype("<f4"), "float16": np.dtype("<f2"), "bfloat16": np.dtype("<u2"),
    "float64": np.dtype("<f8"), "int64": np.dtype("<i8"), "int32": np.dtype("<i4"),
    "int16": np.dtype("<i2"), "int8": np.dtype("i1"), "uint8": np.dtype("u1"),
    "bool": np.dtype("u1"),
}


def _accumulator(dtype: str) -> np.dtype:
    if dtype == "float64":
        return np.dtype(np.float64)
    return np.dtype(np.float32) if dtype in weights.FLOATS else np.dtype(np.int64)


def _widen(stored: np.ndarray, dtype: str) -> np.ndarray:
    """Values as read from the wire, in their accumulator's dtype."""
    if dtype == "bfloat16":
        return weights.bfloat16_to_float32(stored)
    return stored.astype(_accumulator(dtype), copy=False)


class WeightedSum(StreamedSum):
    """Σ samples_i × weights_i over the workers folded in so far, and Σ samples_i.

    Uploads (raw bytes in manifest order) fold in as they arrive (see coordinator.contributions).
    Made once per task and restarted every round: fresh memory is slow to fault in, reused
    memory is not.
    """

    def __init__(self, infos: list[task_pb2.TensorInfo]) -> None:
        super().__init__()
        self.infos = infos
        self.samples = 0
        self.sums = [np.zeros(weights.count(info), dtype=_accumulator(info.dtype))
                     for info in infos]
        self.ends = np.cumsum([weights.nbytes(info) for info in infos])  # byte offsets
        self.starts = [int(end) - weights.nbytes(info) for info, end in zip(infos, self.ends, strict=True)]
        self._scaled = {dtype: np.empty(0, dtype) for dtype in {s.dtype for s in self.sums}}

    def zero(self) -> None:
        self.samples = 0
        for total in self.sums:
            total.fill(0)

    def completed(self, weight: int) -> None:
        self.samples += weight

    def fold(self, offset: int, data: memoryview, weight: int) -> int:
        """Adds `weight` × the values in `data`, up to the end of the tensor at `offset`."""
        index = int(np.searchsorted(self.ends, offset, side="right"))
        info, flat = self.infos[index], self.sums[index]
        stored = _STORED[info.dtype]
        count = min(len(data), int(self.ends[index]) - offset) // stored.itemsize
        values = _widen(np.frombuffer(data, stored, count), info.dtype)
        if self._scaled[flat.dtype].size < count:
            self._scaled[flat.dtype] = np.empty(count, flat.dtype)
        scaled = self._scaled[flat.dtype][:count]
        start = (offset - self.starts[index]) // stored.itemsize
        part = flat[start:start + count]
        with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN average as they are
            np.multiply(values, flat.dtype.type(weight), out=scaled)
            np.add(part, scaled, out=part)
        return count * stored.itemsize

    def write_average(self, path: Path) -> Checksum:
        """Writes Σ samples_i × weights_i / Σ samples_i, in each tensor's own dtype; the
        checksum of what it wrote."""
        return write_average(path, self.infos, self.sums, self.samples)


def secure_tail(total: np.ndarray, precision: int) -> np.ndarray:
    """The sample counts and metric sums at the end of a learning round's unmasked secure
    vector (sdk.weights), as float64."""
    if total.dtype == np.uint64:
        return decode(total[-weights.TAIL:], precision)
    return np.array(decode_wide(total[-2 * weights.TAIL:]), dtype=np.float64) / 10.0**precision


def write_secure_average(path: Path, infos: list[task_pb2.TensorInfo], total: np.ndarray,
                         samples: int, precision: int, global_path: Path) -> Checksum:
    """Writes the average of an unmasked secure sum (sdk.weights): of weights, decoded in place
    (uint64 words); of updates (uint32), piece by piece, each the global weights at
    `global_path` plus the summed updates over `samples`. Its checksum."""
    if total.dtype == np.uint64:
        sums = decode_in_place(total, precision)
        return write_average(path, infos, per_tensor(sums, infos), samples)
    stored = np.memmap(global_path, dtype=np.uint8, mode="r") if global_path.stat().st_size else b""
    base = [np.frombuffer(stored, _STORED[info.dtype], weights.count(info), start)
            for info, start in zip(infos, np.cumsum([0] + [weights.nbytes(i) for i in infos]))]
    return write_average(path, infos, per_tensor(fixedpoint.signed(total), infos), samples,
                         base, 10.0**-precision)


def per_tensor(flat: np.ndarray, infos: list[task_pb2.TensorInfo]) -> list[np.ndarray]:
    """Views of a flat vector of every tensor's values, in manifest order, one per tensor."""
    bounds = np.cumsum([0] + [weights.count(info) for info in infos])
    return [flat[start:end] for start, end in zip(bounds[:-1], bounds[1:], strict=True)]


def write_average(path: Path, infos: list[task_pb2.TensorInfo], totals: list[np.ndarray],
                  samples: int, base: list[np.ndarray] | None = None,
                  unit: float = 1.0) -> Checksum:
    """Writes each tensor's weighted sum in `totals` divided by `samples`, in the tensor's own
    dtype (by the rules above), as raw bytes in manifest order, a piece at a time, and returns
    the checksum of what it wrote. Floating totals are divided in place; an integer tensor's
    total may come as float64 (from secure aggregation's fixed point) and is rounded to the
    integer it encodes. With `base` (each tensor's global weights, as stored) `totals` sum
    updates in units of `unit`: a weighted sum is then samples * base + total * unit.

    An existing file is overwritten in place, then cut to size: rewriting pages the page cache
    already holds costs a fraction of allocating a new file's and freeing an old one's."""
    if samples <= 0:
        raise ValueError("no worker was folded in")
    checksum = Checksum()
    with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644), "wb") as handle:
        for i, (info, total) in enumerate(zip(infos, totals, strict=True)):
            for start in range(0, total.size, PIECE // 8):
                piece = total[start:start + PIECE // 8]
                if base is not None:
                    piece = piece * unit  # float64
                    piece += samples * _widen(base[i][start:start + piece.size],
                                              info.dtype).astype(np.float64)
                average = _average(info.dtype, piece, samples)
                piece = memoryview(np.ascontiguousarray(average)).cast("B")
                checksum.update(piece)
                handle.write(piece)
        handle.truncate()
    return checksum


def _average(dtype: str, total: np.ndarray, samples: int) -> np.ndarray:
    """A piece of a tensor's average, as stored on the wire."""
    if dtype in weights.FLOATS:
        np.divide(total, total.dtype.type(samples), out=total)
        if dtype == "bfloat16":
            return weights.float32_to_bfloat16(total)
        return total.astype(_STORED[dtype], copy=False)
    if total.dtype.kind == "f":
        total = np.rint(total).astype(np.int64)
    if dtype == "bool":
        return (2 * total >= samples).astype(np.uint8)
    return ((2 * total + samples) // (2 * samples)).astype(_STORED[dtype])
