"""Converts pandas objects, scalars and their nests to and from the `Value` message.

Numbers travel as raw little-endian bytes with their dtype, labels and objects item by item, so
what a user gets back has the dtypes and index labels pandas gave on the coordinator.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sdk.proto import values_pb2 as pb

_RAW_KINDS = "biufmM"  # numpy kinds that travel as raw bytes


def encode_scalar(value: Any) -> pb.Scalar:
    """A Python or numpy scalar (or None / pd.NA) as a Scalar."""
    dtype = value.dtype.str if isinstance(value, np.generic) else ""
    if value is None:
        return pb.Scalar(null_value=True)
    if value is pd.NA:
        return pb.Scalar(null_value=True, dtype="NA")
    if isinstance(value, (bool, np.bool_)):
        return pb.Scalar(bool_value=bool(value), dtype=dtype)
    if isinstance(value, (int, np.integer)):
        return pb.Scalar(int_value=int(value), dtype=dtype)
    if isinstance(value, (float, np.floating)):
        return pb.Scalar(float_value=float(value), dtype=dtype)
    if isinstance(value, str):
        return pb.Scalar(string_value=value)
    raise TypeError(f"cannot send a value of type {type(value).__name__} ({value!r})")


def decode_scalar(message: pb.Scalar) -> Any:
    kind = message.WhichOneof("kind")
    if kind == "null_value" or kind is None:
        return pd.NA if message.dtype == "NA" else None
    value = getattr(message, kind)
    return np.dtype(message.dtype).type(value) if message.dtype else value


def encode_column(values: pd.Index | pd.Series | np.ndarray, name: Any = None) -> pb.Column:
    """A one-dimensional array, keeping its dtype; a MultiIndex as its levels' values."""
    if isinstance(values, pd.MultiIndex):
        return pb.Column(levels=[encode_column(values.get_level_values(i), level)
                                 for i, level in enumerate(values.names)])
    column = pb.Column(dtype=str(values.dtype), name=encode_scalar(name))
    array = values if isinstance(values, np.ndarray) else values.to_numpy()
    if isinstance(values.dtype, np.dtype) and values.dtype.kind in _RAW_KINDS:
        little = array.astype(array.dtype.newbyteorder("<"), copy=False)
        column.dtype = little.dtype.str
        column.data = np.ascontiguousarray(little).tobytes()
    else:
        column.items.extend(encode_scalar(item) for item in array)
    return column


def decode_column(message: pb.Column) -> tuple[np.ndarray | pd.api.extensions.ExtensionArray, Any]:
    """The array and the name of a Column."""
    if message.items or not message.data:
        items = [decode_scalar(item) for item in message.items]
        if message.dtype in ("", "object"):
            array = np.empty(len(items), dtype=object)
            array[:] = items
        else:
            array = pd.array(items, dtype=message.dtype)
    else:
        array = np.frombuffer(message.data, dtype=np.dtype(message.dtype)).copy()
    return array, decode_scalar(message.name)


def encode(value: Any) -> pb.Value:
    """Any result of an analytics task: a scalar, Series, DataFrame or a tuple/list/dict of them."""
    if isinstance(value, pd.DataFrame):
        return pb.Value(
            frame=pb.FrameValue(
                index=encode_column(value.index, value.index.name),
                columns=encode_column(value.columns, value.columns.name),
                data=[encode_column(value.iloc[:, i]) for i in range(value.shape[1])],
            )
        )
    if isinstance(value, pd.Series):
        return pb.Value(
            series=pb.SeriesValue(
                index=encode_column(value.index, value.index.name),
                values=encode_column(value, value.name),
            )
        )
    if isinstance(value, np.ndarray) and value.ndim == 1:
        return pb.Value(array=encode_column(value))
    if isinstance(value, tuple):
        return pb.Value(tuple=pb.ValueList(items=[encode(v) for v in value]))
    if isinstance(value, list):
        return pb.Value(list=pb.ValueList(items=[encode(v) for v in value]))
    if isinstance(value, dict):
        return pb.Value(
            dict=pb.ValueDict(
                keys=[encode_scalar(k) for k in value],
                values=[encode(v) for v in value.values()],
            )
        )
    return pb.Value(scalar=encode_scalar(value))


def decode_index(message: pb.Column) -> pd.Index:
    """An Index (a MultiIndex where the column has levels) with its name(s)."""
    if message.levels:
        levels = [decode_column(level) for level in message.levels]
        return pd.MultiIndex.from_arrays([values for values, _ in levels],
                                         names=[name for _, name in levels])
    values, name = decode_column(message)
    return pd.Index(values, name=name)


def decode(message: pb.Value) -> Any:
    kind = message.WhichOneof("kind")
    if kind == "frame":
        data = {i: decode_column(column)[0] for i, column in enumerate(message.frame.data)}
        frame = pd.DataFrame(data, index=decode_index(message.frame.index))
        frame.columns = decode_index(message.frame.columns)
        return frame
    if kind == "series":
        values, name = decode_column(message.series.values)
        return pd.Series(values, index=decode_index(message.series.index), name=name)
    if kind == "array":
        return np.asarray(decode_column(message.array)[0])
    if kind == "tuple":
        return tuple(decode(v) for v in message.tuple.items)
    if kind == "list":
        return [decode(v) for v in message.list.items]
    if kind == "dict":
        return {decode_scalar(k): decode(v) for k, v in zip(message.dict.keys, message.dict.values)}
    if kind == "scalar":
        return decode_scalar(message.scalar)
    raise ValueError("the value is empty")

