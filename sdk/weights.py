"""Sizes of weights on the wire, and bfloat16's bits, without importing torch."""

from __future__ import annotations

import numpy as np

from sdk.proto import task_pb2

ITEMSIZES = {
    "float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int64": 8, "int32": 4,
    "int16": 2, "int8": 1, "uint8": 1, "bool": 1,
}
FLOATS = frozenset({"float32", "float16", "bfloat16", "float64"})


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
# (names sorted), in METRIC_SLOTS slots. In 32-bit words (`secure_bits`) every weight's update
# (trained minus global) times the samples instead, and each of the tail's values as two words,
# a high and a low part (fixedpoint.encode_wide).
METRIC_SLOTS = 16
TAIL = 2 + METRIC_SLOTS


def count(info: task_pb2.TensorInfo) -> int:
    """The values of one tensor of a manifest."""
    return nbytes(info) // ITEMSIZES[info.dtype]


def secure_length(infos: list[task_pb2.TensorInfo], bits: int = 64) -> int:
    """Words in a learning round's secure-aggregation vector of `bits`-bit words."""
    return sum(count(info) for info in infos) + (TAIL if bits == 64 else 2 * TAIL)


def secure_bits(spec: task_pb2.TaskSpec) -> int:
    """The word of a learning task's secure-aggregation vector: 32 bits where its update_bound
    keeps every sum of updates (times samples, in fixed point) in 32-bit words, that is
    update_bound * 10^precision * max_clients < 2^31; else 64 (the weights themselves), and
    always under DP-FedAvg (its noised values)."""
    bound, dp = spec.learning.update_bound, spec.learning.clip_norm > 0
    if not dp and bound > 0 and bound * 10.0**spec.precision * spec.rules.max_clients < 2.0**31:
        return 32
    return 64


def float_values(infos: list[task_pb2.TensorInfo]) -> int:
    """The floating-point values of a manifest (what DP-FedAvg clips and noises)."""
    return sum(count(info) for info in infos if info.dtype in FLOATS)


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 values (their 16 bits, uint16) as float32: a bfloat16 is a float32's upper half."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def float32_to_bfloat16(values: np.ndarray) -> np.ndarray:
    """float32 to bfloat16's 16 bits, rounding to nearest even (NaN stays NaN)."""
    bits = values.astype(np.float32, copy=False).view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(values), np.uint16(0x7FC0), rounded)
