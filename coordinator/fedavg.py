"""FedAvg's arithmetic on the coordinator: a running weighted sum of state dicts, in O(model).

Each worker's weights are folded in from the file they were received into, tensor by tensor in
bounded pieces, so memory holds one accumulator per tensor whatever the number of workers.
Floating tensors are averaged in float32 (float64 for float64) and cast back to their dtype.
Integer tensors (BatchNorm's `num_batches_tracked`) stay integers: their weighted mean is
summed exactly in int64 and rounded to the nearest integer, halves up; bool tensors become
the weighted majority.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sdk import tensors, weights
from sdk.proto import task_pb2

PIECE = 16 << 20  # bytes read at a time


def _accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype == torch.float64:
        return torch.float64
    if dtype.is_floating_point:
        return torch.float32
    return torch.int64


class WeightedSum:
    """Σ samples_i × weights_i over the workers folded in so far, and Σ samples_i."""

    def __init__(self, infos: list[task_pb2.TensorInfo]) -> None:
        self.infos = infos
        self.samples = 0
        self.sums = {
            info.name: torch.zeros(tuple(info.shape),
                                   dtype=_accumulator_dtype(tensors.DTYPES[info.dtype]))
            for info in infos
        }
        self._buffer = bytearray(PIECE)

    def add_file(self, path: Path, samples: int) -> None:
        """Folds in the state dict stored in `path` (raw bytes in manifest order)."""
        if samples <= 0:
            raise ValueError(f"a worker reported {samples} training samples")
        with open(path, "rb") as handle:
            for info in self.infos:
                dtype = tensors.DTYPES[info.dtype]
                flat = self.sums[info.name].view(-1)
                itemsize = dtype.itemsize
                remaining = weights.nbytes(info)
                start = 0
                while remaining:
                    take = min(remaining, PIECE - PIECE % itemsize)
                    view = memoryview(self._buffer)[:take]
                    if handle.readinto(view) != take:
                        raise ValueError(f"{path.name} ends inside tensor {info.name!r}")
                    values = torch.frombuffer(self._buffer, dtype=dtype, count=take // itemsize)
                    count = take // itemsize
                    flat[start:start + count].add_(values.to(flat.dtype), alpha=samples)
                    start += count
                    remaining -= take
        self.samples += samples

    def write_average(self, path: Path) -> None:
        """Writes Σ samples_i × weights_i / Σ samples_i, in each tensor's own dtype."""
        if not self.samples:
            raise ValueError("no worker was folded in")
        average = {}
        for info in self.infos:
            dtype = tensors.DTYPES[info.dtype]
            total = self.sums[info.name]
            if dtype.is_floating_point:
                average[info.name] = total.div_(self.samples).to(dtype)
            elif dtype == torch.bool:
                average[info.name] = (2 * total >= self.samples)
            else:
                rounded = torch.div(2 * total + self.samples, 2 * self.samples,
                                    rounding_mode="floor")
                average[info.name] = rounded.to(dtype)
        tensors.write_file(path, average)
