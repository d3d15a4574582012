from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Scalar(_message.Message):
    __slots__ = ("float_value", "int_value", "bool_value", "string_value", "null_value", "dtype")
    FLOAT_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    NULL_VALUE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    float_value: float
    int_value: int
    bool_value: bool
    string_value: str
    null_value: bool
    dtype: str
    def __init__(self, float_value: _Optional[float] = ..., int_value: _Optional[int] = ..., bool_value: _Optional[bool] = ..., string_value: _Optional[str] = ..., null_value: _Optional[bool] = ..., dtype: _Optional[str] = ...) -> None: ...

class Column(_message.Message):
    __slots__ = ("dtype", "data", "items", "name", "levels")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    data: bytes
    items: _containers.RepeatedCompositeFieldContainer[Scalar]
    name: Scalar
    levels: _containers.RepeatedCompositeFieldContainer[Column]
    def __init__(self, dtype: _Optional[str] = ..., data: _Optional[bytes] = ..., items: _Optional[_Iterable[_Union[Scalar, _Mapping]]] = ..., name: _Optional[_Union[Scalar, _Mapping]] = ..., levels: _Optional[_Iterable[_Union[Column, _Mapping]]] = ...) -> None: ...

class SeriesValue(_message.Message):
    __slots__ = ("index", "values")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    index: Column
    values: Column
    def __init__(self, index: _Optional[_Union[Column, _Mapping]] = ..., values: _Optional[_Union[Column, _Mapping]] = ...) -> None: ...

class FrameValue(_message.Message):
    __slots__ = ("index", "columns", "data")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    index: Column
    columns: Column
    data: _containers.RepeatedCompositeFieldContainer[Column]
    def __init__(self, index: _Optional[_Union[Column, _Mapping]] = ..., columns: _Optional[_Union[Column, _Mapping]] = ..., data: _Optional[_Iterable[_Union[Column, _Mapping]]] = ...) -> None: ...

class ValueList(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Value]
    def __init__(self, items: _Optional[_Iterable[_Union[Value, _Mapping]]] = ...) -> None: ...

class ValueDict(_message.Message):
    __slots__ = ("keys", "values")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[Scalar]
    values: _containers.RepeatedCompositeFieldContainer[Value]
    def __init__(self, keys: _Optional[_Iterable[_Union[Scalar, _Mapping]]] = ..., values: _Optional[_Iterable[_Union[Value, _Mapping]]] = ...) -> None: ...

class Value(_message.Message):
    __slots__ = ("scalar", "series", "frame", "tuple", "list", "dict", "array")
    SCALAR_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    TUPLE_FIELD_NUMBER: _ClassVar[int]
    LIST_FIELD_NUMBER: _ClassVar[int]
    DICT_FIELD_NUMBER: _ClassVar[int]
    ARRAY_FIELD_NUMBER: _ClassVar[int]
    scalar: Scalar
    series: SeriesValue
    frame: FrameValue
    tuple: ValueList
    list: ValueList
    dict: ValueDict
    array: Column
    def __init__(self, scalar: _Optional[_Union[Scalar, _Mapping]] = ..., series: _Optional[_Union[SeriesValue, _Mapping]] = ..., frame: _Optional[_Union[FrameValue, _Mapping]] = ..., tuple: _Optional[_Union[ValueList, _Mapping]] = ..., list: _Optional[_Union[ValueList, _Mapping]] = ..., dict: _Optional[_Union[ValueDict, _Mapping]] = ..., array: _Optional[_Union[Column, _Mapping]] = ...) -> None: ...
