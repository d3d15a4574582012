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


# Secure aggregation's vector for a learning round: every weight times the worker's training
# samples, then the samples, the validation samples, and validation samples times each metric
# (names sorted), in METRIC_SLOTS slots.
METRIC_SLOTS = 16


def count(info: task_pb2.TensorInfo) -> int:
    """The values of one tensor of a manifest."""
    return nbytes(info) // ITEMSIZES[info.dtype]


def secure_length(infos: list[task_pb2.TensorInfo]) -> int:
    """Words in a learning round's secure-aggregation vector."""
    return sum(count(info) for info in infos) + 2 + METRIC_SLOTS
