from . import task_pb2 as _task_pb2
from . import values_pb2 as _values_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATE_UNSPECIFIED: _ClassVar[TaskState]
    TASK_STATE_PENDING: _ClassVar[TaskState]
    TASK_STATE_RUNNING: _ClassVar[TaskState]
    TASK_STATE_FINISHED: _ClassVar[TaskState]
    TASK_STATE_ERROR: _ClassVar[TaskState]
    TASK_STATE_CANCELLED: _ClassVar[TaskState]
TASK_STATE_UNSPECIFIED: TaskState
TASK_STATE_PENDING: TaskState
TASK_STATE_RUNNING: TaskState
TASK_STATE_FINISHED: TaskState
TASK_STATE_ERROR: TaskState
TASK_STATE_CANCELLED: TaskState

class CreateTaskRequest(_message.Message):
    __slots__ = ("chunk", "weights_chunk", "signature")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_CHUNK_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    chunk: bytes
    weights_chunk: bytes
    signature: _task_pb2.TaskSignature
    def __init__(self, chunk: _Optional[bytes] = ..., weights_chunk: _Optional[bytes] = ..., signature: _Optional[_Union[_task_pb2.TaskSignature, _Mapping]] = ...) -> None: ...

class CreateTaskResponse(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    def __init__(self, task_id: _Optional[int] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    def __init__(self, task_id: _Optional[int] = ...) -> None: ...

class TaskInfo(_message.Message):
    __slots__ = ("task_id", "name", "kind", "state", "error", "created_at", "finished_at", "rules", "datasets", "log_length", "owner", "workers")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    LOG_LENGTH_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    name: str
    kind: _task_pb2.TaskKind
    state: TaskState
    error: str
    created_at: float
    finished_at: float
    rules: _task_pb2.RoundRules
    datasets: _containers.RepeatedCompositeFieldContainer[_task_pb2.DatasetRef]
    log_length: int
    owner: str
    workers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, task_id: _Optional[int] = ..., name: _Optional[str] = ..., kind: _Optional[_Union[_task_pb2.TaskKind, str]] = ..., state: _Optional[_Union[TaskState, str]] = ..., error: _Optional[str] = ..., created_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., rules: _Optional[_Union[_task_pb2.RoundRules, _Mapping]] = ..., datasets: _Optional[_Iterable[_Union[_task_pb2.DatasetRef, _Mapping]]] = ..., log_length: _Optional[int] = ..., owner: _Optional[str] = ..., workers: _Optional[_Iterable[str]] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ("limit", "before_task_id")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    BEFORE_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    limit: int
    before_task_id: int
    def __init__(self, limit: _Optional[int] = ..., before_task_id: _Optional[int] = ...) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[TaskInfo]
    def __init__(self, tasks: _Optional[_Iterable[_Union[TaskInfo, _Mapping]]] = ...) -> None: ...

class StreamLogsRequest(_message.Message):
    __slots__ = ("task_id", "offset", "follow")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    offset: int
    follow: bool
    def __init__(self, task_id: _Optional[int] = ..., offset: _Optional[int] = ..., follow: _Optional[bool] = ...) -> None: ...

class LogEntry(_message.Message):
    __slots__ = ("offset", "time", "message")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    offset: int
    time: float
    message: str
    def __init__(self, offset: _Optional[int] = ..., time: _Optional[float] = ..., message: _Optional[str] = ...) -> None: ...

class GetResultRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    def __init__(self, task_id: _Optional[int] = ...) -> None: ...

class ResultChunk(_message.Message):
    __slots__ = ("format", "preview", "chunk", "tensors")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    format: str
    preview: str
    chunk: bytes
    tensors: _containers.RepeatedCompositeFieldContainer[_task_pb2.TensorInfo]
    def __init__(self, format: _Optional[str] = ..., preview: _Optional[str] = ..., chunk: _Optional[bytes] = ..., tensors: _Optional[_Iterable[_Union[_task_pb2.TensorInfo, _Mapping]]] = ...) -> None: ...

class GetMetricsRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    def __init__(self, task_id: _Optional[int] = ...) -> None: ...

class RoundMetrics(_message.Message):
    __slots__ = ("round", "metrics", "workers")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ROUND_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    round: int
    metrics: _containers.ScalarMap[str, float]
    workers: int
    def __init__(self, round: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., workers: _Optional[int] = ...) -> None: ...

class GetMetricsResponse(_message.Message):
    __slots__ = ("rounds",)
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    rounds: _containers.RepeatedCompositeFieldContainer[RoundMetrics]
    def __init__(self, rounds: _Optional[_Iterable[_Union[RoundMetrics, _Mapping]]] = ...) -> None: ...

class CancelTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    def __init__(self, task_id: _Optional[int] = ...) -> None: ...

class ListAuditRequest(_message.Message):
    __slots__ = ("limit", "before_id")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    BEFORE_ID_FIELD_NUMBER: _ClassVar[int]
    limit: int
    before_id: int
    def __init__(self, limit: _Optional[int] = ..., before_id: _Optional[int] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("id", "time", "caller", "role", "action", "target", "outcome", "detail")
    ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    id: int
    time: float
    caller: str
    role: str
    action: str
    target: str
    outcome: str
    detail: str
    def __init__(self, id: _Optional[int] = ..., time: _Optional[float] = ..., caller: _Optional[str] = ..., role: _Optional[str] = ..., action: _Optional[str] = ..., target: _Optional[str] = ..., outcome: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class ListAuditResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AuditEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[AuditEntry, _Mapping]]] = ...) -> None: ...

class ListWorkersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WorkerInfo(_message.Message):
    __slots__ = ("name", "datasets", "connected_at", "running_tasks")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_AT_FIELD_NUMBER: _ClassVar[int]
    RUNNING_TASKS_FIELD_NUMBER: _ClassVar[int]
    name: str
    datasets: _containers.RepeatedScalarFieldContainer[str]
    connected_at: float
    running_tasks: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., datasets: _Optional[_Iterable[str]] = ..., connected_at: _Optional[float] = ..., running_tasks: _Optional[_Iterable[int]] = ...) -> None: ...

class ListWorkersResponse(_message.Message):
    __slots__ = ("workers",)
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[WorkerInfo]
    def __init__(self, workers: _Optional[_Iterable[_Union[WorkerInfo, _Mapping]]] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("name", "datasets", "version", "coordinator_id", "held_tasks")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_ID_FIELD_NUMBER: _ClassVar[int]
    HELD_TASKS_FIELD_NUMBER: _ClassVar[int]
    name: str
    datasets: _containers.RepeatedScalarFieldContainer[str]
    version: str
    coordinator_id: str
    held_tasks: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., datasets: _Optional[_Iterable[str]] = ..., version: _Optional[str] = ..., coordinator_id: _Optional[str] = ..., held_tasks: _Optional[_Iterable[int]] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("session_id", "heartbeat_interval", "coordinator_id", "release_tasks", "crl")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_ID_FIELD_NUMBER: _ClassVar[int]
    RELEASE_TASKS_FIELD_NUMBER: _ClassVar[int]
    CRL_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    heartbeat_interval: float
    coordinator_id: str
    release_tasks: _containers.RepeatedScalarFieldContainer[int]
    crl: bytes
    def __init__(self, session_id: _Optional[str] = ..., heartbeat_interval: _Optional[float] = ..., coordinator_id: _Optional[str] = ..., release_tasks: _Optional[_Iterable[int]] = ..., crl: _Optional[bytes] = ...) -> None: ...

class WorkerMessage(_message.Message):
    __slots__ = ("session_id", "heartbeat", "datasets")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    heartbeat: Heartbeat
    datasets: DatasetList
    def __init__(self, session_id: _Optional[str] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., datasets: _Optional[_Union[DatasetList, _Mapping]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("time",)
    TIME_FIELD_NUMBER: _ClassVar[int]
    time: float
    def __init__(self, time: _Optional[float] = ...) -> None: ...

class DatasetList(_message.Message):
    __slots__ = ("names",)
    NAMES_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, names: _Optional[_Iterable[str]] = ...) -> None: ...

class CoordinatorMessage(_message.Message):
    __slots__ = ("heartbeat", "assignment", "release_task_id", "crl")
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    RELEASE_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CRL_FIELD_NUMBER: _ClassVar[int]
    heartbeat: Heartbeat
    assignment: Assignment
    release_task_id: int
    crl: bytes
    def __init__(self, heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., assignment: _Optional[_Union[Assignment, _Mapping]] = ..., release_task_id: _Optional[int] = ..., crl: _Optional[bytes] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("exchange_id", "task_id", "round", "phase", "stage", "inputs", "timeout", "secagg")
    EXCHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    SECAGG_FIELD_NUMBER: _ClassVar[int]
    exchange_id: int
    task_id: int
    round: int
    phase: str
    stage: int
    inputs: _values_pb2.Value
    timeout: float
    secagg: SecAggRequest
    def __init__(self, exchange_id: _Optional[int] = ..., task_id: _Optional[int] = ..., round: _Optional[int] = ..., phase: _Optional[str] = ..., stage: _Optional[int] = ..., inputs: _Optional[_Union[_values_pb2.Value, _Mapping]] = ..., timeout: _Optional[float] = ..., secagg: _Optional[_Union[SecAggRequest, _Mapping]] = ...) -> None: ...

class SecAggRequest(_message.Message):
    __slots__ = ("index", "selected", "public_keys", "shares", "peers", "survivors", "layout", "ring_nonces", "listed")
    class PublicKeysEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: SecAggKeys
        def __init__(self, key: _Optional[int] = ..., value: _Optional[_Union[SecAggKeys, _Mapping]] = ...) -> None: ...
    class SharesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: bytes
        def __init__(self, key: _Optional[int] = ..., value: _Optional[bytes] = ...) -> None: ...
    class RingNoncesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: bytes
        def __init__(self, key: _Optional[int] = ..., value: _Optional[bytes] = ...) -> None: ...
    class ListedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: SecAggListed
        def __init__(self, key: _Optional[int] = ..., value: _Optional[_Union[SecAggListed, _Mapping]] = ...) -> None: ...
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SELECTED_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEYS_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    RING_NONCES_FIELD_NUMBER: _ClassVar[int]
    LISTED_FIELD_NUMBER: _ClassVar[int]
    index: int
    selected: int
    public_keys: _containers.MessageMap[int, SecAggKeys]
    shares: _containers.ScalarMap[int, bytes]
    peers: _containers.RepeatedScalarFieldContainer[int]
    survivors: _containers.RepeatedScalarFieldContainer[int]
    layout: _values_pb2.Value
    ring_nonces: _containers.ScalarMap[int, bytes]
    listed: _containers.MessageMap[int, SecAggListed]
    def __init__(self, index: _Optional[int] = ..., selected: _Optional[int] = ..., public_keys: _Optional[_Mapping[int, SecAggKeys]] = ..., shares: _Optional[_Mapping[int, bytes]] = ..., peers: _Optional[_Iterable[int]] = ..., survivors: _Optional[_Iterable[int]] = ..., layout: _Optional[_Union[_values_pb2.Value, _Mapping]] = ..., ring_nonces: _Optional[_Mapping[int, bytes]] = ..., listed: _Optional[_Mapping[int, SecAggListed]] = ...) -> None: ...

class SecAggListed(_message.Message):
    __slots__ = ("ring_commitment", "worker")
    RING_COMMITMENT_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    ring_commitment: bytes
    worker: str
    def __init__(self, ring_commitment: _Optional[bytes] = ..., worker: _Optional[str] = ...) -> None: ...

class SecAggKeys(_message.Message):
    __slots__ = ("c_pk", "s_pk", "commitment", "signature", "certificate", "worker", "ring_commitment")
    C_PK_FIELD_NUMBER: _ClassVar[int]
    S_PK_FIELD_NUMBER: _ClassVar[int]
    COMMITMENT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    RING_COMMITMENT_FIELD_NUMBER: _ClassVar[int]
    c_pk: bytes
    s_pk: bytes
    commitment: bytes
    signature: bytes
    certificate: bytes
    worker: str
    ring_commitment: bytes
    def __init__(self, c_pk: _Optional[bytes] = ..., s_pk: _Optional[bytes] = ..., commitment: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., certificate: _Optional[bytes] = ..., worker: _Optional[str] = ..., ring_commitment: _Optional[bytes] = ...) -> None: ...

class SecAggResponse(_message.Message):
    __slots__ = ("keys", "shares", "malformed", "self_mask_shares", "mask_key_shares", "layout", "ring_nonce")
    class SharesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: bytes
        def __init__(self, key: _Optional[int] = ..., value: _Optional[bytes] = ...) -> None: ...
    class SelfMaskSharesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: bytes
        def __init__(self, key: _Optional[int] = ..., value: _Optional[bytes] = ...) -> None: ...
    class MaskKeySharesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: bytes
        def __init__(self, key: _Optional[int] = ..., value: _Optional[bytes] = ...) -> None: ...
    KEYS_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    MALFORMED_FIELD_NUMBER: _ClassVar[int]
    SELF_MASK_SHARES_FIELD_NUMBER: _ClassVar[int]
    MASK_KEY_SHARES_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    RING_NONCE_FIELD_NUMBER: _ClassVar[int]
    keys: SecAggKeys
    shares: _containers.ScalarMap[int, bytes]
    malformed: _containers.RepeatedScalarFieldContainer[int]
    self_mask_shares: _containers.ScalarMap[int, bytes]
    mask_key_shares: _containers.ScalarMap[int, bytes]
    layout: _values_pb2.Value
    ring_nonce: bytes
    def __init__(self, keys: _Optional[_Union[SecAggKeys, _Mapping]] = ..., shares: _Optional[_Mapping[int, bytes]] = ..., malformed: _Optional[_Iterable[int]] = ..., self_mask_shares: _Optional[_Mapping[int, bytes]] = ..., mask_key_shares: _Optional[_Mapping[int, bytes]] = ..., layout: _Optional[_Union[_values_pb2.Value, _Mapping]] = ..., ring_nonce: _Optional[bytes] = ...) -> None: ...

class FetchTaskRequest(_message.Message):
    __slots__ = ("session_id", "task_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    task_id: int
    def __init__(self, session_id: _Optional[str] = ..., task_id: _Optional[int] = ...) -> None: ...

class FetchWeightsRequest(_message.Message):
    __slots__ = ("session_id", "task_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    task_id: int
    def __init__(self, session_id: _Optional[str] = ..., task_id: _Optional[int] = ...) -> None: ...

class DataChunk(_message.Message):
    __slots__ = ("chunk",)
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    chunk: bytes
    def __init__(self, chunk: _Optional[bytes] = ...) -> None: ...

class TaskChunk(_message.Message):
    __slots__ = ("chunk", "signature")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    chunk: bytes
    signature: _task_pb2.TaskSignature
    def __init__(self, chunk: _Optional[bytes] = ..., signature: _Optional[_Union[_task_pb2.TaskSignature, _Mapping]] = ...) -> None: ...

class UploadHeader(_message.Message):
    __slots__ = ("session_id", "exchange_id", "error", "meta", "note")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    exchange_id: int
    error: str
    meta: _values_pb2.Value
    note: str
    def __init__(self, session_id: _Optional[str] = ..., exchange_id: _Optional[int] = ..., error: _Optional[str] = ..., meta: _Optional[_Union[_values_pb2.Value, _Mapping]] = ..., note: _Optional[str] = ...) -> None: ...

class UploadRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: UploadHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[UploadHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class UploadResponse(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    def __init__(self, accepted: _Optional[bool] = ...) -> None: ...
