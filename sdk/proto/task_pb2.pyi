from . import values_pb2 as _values_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_KIND_UNSPECIFIED: _ClassVar[TaskKind]
    TASK_KIND_ANALYTICS: _ClassVar[TaskKind]
    TASK_KIND_LEARNING: _ClassVar[TaskKind]
TASK_KIND_UNSPECIFIED: TaskKind
TASK_KIND_ANALYTICS: TaskKind
TASK_KIND_LEARNING: TaskKind

class RoundRules(_message.Message):
    __slots__ = ("min_clients", "max_clients", "wait_timeout", "connection_timeout")
    MIN_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    MAX_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    WAIT_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    min_clients: int
    max_clients: int
    wait_timeout: float
    connection_timeout: float
    def __init__(self, min_clients: _Optional[int] = ..., max_clients: _Optional[int] = ..., wait_timeout: _Optional[float] = ..., connection_timeout: _Optional[float] = ...) -> None: ...

class DatasetRef(_message.Message):
    __slots__ = ("argument", "file")
    ARGUMENT_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    argument: str
    file: str
    def __init__(self, argument: _Optional[str] = ..., file: _Optional[str] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("id", "op", "inputs", "params")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _values_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_values_pb2.Value, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    id: int
    op: str
    inputs: _containers.RepeatedScalarFieldContainer[int]
    params: _containers.MessageMap[str, _values_pb2.Value]
    def __init__(self, id: _Optional[int] = ..., op: _Optional[str] = ..., inputs: _Optional[_Iterable[int]] = ..., params: _Optional[_Mapping[str, _values_pb2.Value]] = ...) -> None: ...

class Output(_message.Message):
    __slots__ = ("node", "tuple", "list", "dict")
    NODE_FIELD_NUMBER: _ClassVar[int]
    TUPLE_FIELD_NUMBER: _ClassVar[int]
    LIST_FIELD_NUMBER: _ClassVar[int]
    DICT_FIELD_NUMBER: _ClassVar[int]
    node: int
    tuple: OutputList
    list: OutputList
    dict: OutputDict
    def __init__(self, node: _Optional[int] = ..., tuple: _Optional[_Union[OutputList, _Mapping]] = ..., list: _Optional[_Union[OutputList, _Mapping]] = ..., dict: _Optional[_Union[OutputDict, _Mapping]] = ...) -> None: ...

class OutputList(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Output]
    def __init__(self, items: _Optional[_Iterable[_Union[Output, _Mapping]]] = ...) -> None: ...

class OutputDict(_message.Message):
    __slots__ = ("keys", "values")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[_values_pb2.Scalar]
    values: _containers.RepeatedCompositeFieldContainer[Output]
    def __init__(self, keys: _Optional[_Iterable[_Union[_values_pb2.Scalar, _Mapping]]] = ..., values: _Optional[_Iterable[_Union[Output, _Mapping]]] = ...) -> None: ...

class AnalyticsPlan(_message.Message):
    __slots__ = ("nodes", "output")
    NODES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    output: Output
    def __init__(self, nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ..., output: _Optional[_Union[Output, _Mapping]] = ...) -> None: ...

class TensorInfo(_message.Message):
    __slots__ = ("name", "dtype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class LearningSpec(_message.Message):
    __slots__ = ("task", "max_rounds", "validate_interval", "validate_frac", "merge_epoch", "merge_iteration", "weights", "clip_norm", "noise_multiplier", "update_bound")
    TASK_FIELD_NUMBER: _ClassVar[int]
    MAX_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_FRAC_FIELD_NUMBER: _ClassVar[int]
    MERGE_EPOCH_FIELD_NUMBER: _ClassVar[int]
    MERGE_ITERATION_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    CLIP_NORM_FIELD_NUMBER: _ClassVar[int]
    NOISE_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    UPDATE_BOUND_FIELD_NUMBER: _ClassVar[int]
    task: bytes
    max_rounds: int
    validate_interval: int
    validate_frac: float
    merge_epoch: int
    merge_iteration: int
    weights: _containers.RepeatedCompositeFieldContainer[TensorInfo]
    clip_norm: float
    noise_multiplier: float
    update_bound: float
    def __init__(self, task: _Optional[bytes] = ..., max_rounds: _Optional[int] = ..., validate_interval: _Optional[int] = ..., validate_frac: _Optional[float] = ..., merge_epoch: _Optional[int] = ..., merge_iteration: _Optional[int] = ..., weights: _Optional[_Iterable[_Union[TensorInfo, _Mapping]]] = ..., clip_norm: _Optional[float] = ..., noise_multiplier: _Optional[float] = ..., update_bound: _Optional[float] = ...) -> None: ...

class DifferentialPrivacy(_message.Message):
    __slots__ = ("epsilon", "delta")
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    epsilon: float
    delta: float
    def __init__(self, epsilon: _Optional[float] = ..., delta: _Optional[float] = ...) -> None: ...

class TaskSpec(_message.Message):
    __slots__ = ("format_version", "name", "kind", "rules", "datasets", "analytics", "learning", "secure_aggregation", "precision", "privacy", "secagg_plus_above", "secagg_threshold")
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    ANALYTICS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_FIELD_NUMBER: _ClassVar[int]
    SECURE_AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    SECAGG_PLUS_ABOVE_FIELD_NUMBER: _ClassVar[int]
    SECAGG_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    format_version: int
    name: str
    kind: TaskKind
    rules: RoundRules
    datasets: _containers.RepeatedCompositeFieldContainer[DatasetRef]
    analytics: AnalyticsPlan
    learning: LearningSpec
    secure_aggregation: bool
    precision: int
    privacy: DifferentialPrivacy
    secagg_plus_above: int
    secagg_threshold: float
    def __init__(self, format_version: _Optional[int] = ..., name: _Optional[str] = ..., kind: _Optional[_Union[TaskKind, str]] = ..., rules: _Optional[_Union[RoundRules, _Mapping]] = ..., datasets: _Optional[_Iterable[_Union[DatasetRef, _Mapping]]] = ..., analytics: _Optional[_Union[AnalyticsPlan, _Mapping]] = ..., learning: _Optional[_Union[LearningSpec, _Mapping]] = ..., secure_aggregation: _Optional[bool] = ..., precision: _Optional[int] = ..., privacy: _Optional[_Union[DifferentialPrivacy, _Mapping]] = ..., secagg_plus_above: _Optional[int] = ..., secagg_threshold: _Optional[float] = ...) -> None: ...

class TaskClaims(_message.Message):
    __slots__ = ("spec_sha256", "weights_sha256", "nonce", "expires_at", "signer")
    SPEC_SHA256_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_SHA256_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    SIGNER_FIELD_NUMBER: _ClassVar[int]
    spec_sha256: bytes
    weights_sha256: bytes
    nonce: bytes
    expires_at: float
    signer: str
    def __init__(self, spec_sha256: _Optional[bytes] = ..., weights_sha256: _Optional[bytes] = ..., nonce: _Optional[bytes] = ..., expires_at: _Optional[float] = ..., signer: _Optional[str] = ...) -> None: ...

class TaskSignature(_message.Message):
    __slots__ = ("claims", "signature", "certificate")
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    claims: bytes
    signature: bytes
    certificate: bytes
    def __init__(self, claims: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., certificate: _Optional[bytes] = ...) -> None: ...
