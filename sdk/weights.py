"""Sizes of weights on the wire, without importing torch: what the coordinator checks."""

from __future__ import annotations

from sdk.proto import task_pb2

ITEMSIZES = {
    "float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int64": 8, "int32": 4,
    "int16": 2, "int8": 1, "uint8": 1, "bool": 1,
}


def nbytes(info: task_pb2.TensorInfo) -> int:
    """The bytes of one tensor of a manifest."""
    count = 1
    for size in info.shape:
        count *= size
    return count * ITEMSIZES[info.dtype]


def total_bytes(infos: list[task_pb2.TensorInfo]) -> int:
    return sum(nbytes(info) for info in infos)
