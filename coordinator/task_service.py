"""TaskService: what users call, through the SDK's Client, grpcurl or buf curl."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf.message import DecodeError

from coordinator.auth import caller, may_see, visible_owner
from coordinator.limits import Limits, Refused, bound, exhausted, invalid
from coordinator.store import Checksum, TaskRecord
from coordinator.tasks import TaskManager
from sdk import values, weights
from sdk.analytics.secure import MAX_WORKERS
from sdk.analytics.graph import Graph
from sdk.analytics.plan import Plan
from sdk.dataset import check_relative_name
from sdk.proto import services_pb2 as pb
from sdk.proto import services_pb2_grpc, task_pb2, values_pb2
from sdk.secagg import Rule
from sdk.sizes import show_size
from sdk.task import FORMAT_VERSION, TaskError, check_rules, check_secure
from sdk.trust import ANONYMOUS, TrustError, Verifier
from sdk.wire import CHUNK_SIZE, TENSORS_FORMAT, VALUE_FORMAT, split_chunks

PREVIEW_CHARS = 4000
SUMMARY_BYTES = 1 << 20  # a task's name and dataset references: what every listing carries
LIST_BYTES = 4 << 20  # a page of ListTasks, well under the largest message (sdk.wire)


class TaskService(services_pb2_grpc.TaskServiceServicer):
    """Users' calls; who calls is `auth.caller()`, and a task is only ever seen by its owner
    and admins (`_task`, and the owner filter of `ListTasks`)."""

    def __init__(self, tasks: TaskManager, verifier: Verifier | None) -> None:
        self.tasks = tasks
        self.store = tasks.store
        self.verifier = verifier  # None: no identities, tasks are not signed

    async def CreateTask(self, request_iterator: AsyncIterator[pb.CreateTaskRequest],
                         context: grpc.aio.ServicerContext) -> pb.CreateTaskResponse:
        with self.tasks.reserve(caller().name):
            weights = self.store.scratch / f"create-{secrets.token_hex(8)}.weights"
            try:
                with self.store.writes.guard("a task being received"):
                    received = await _receive(request_iterator, weights, self.tasks.limits)
                spec = task_pb2.TaskSpec()
                try:
                    spec.ParseFromString(received.spec)
                    _validate(spec, received.weights_bytes)
                except (DecodeError, TaskError, ValueError) as error:
                    raise invalid(f"not a valid built task ({len(received.spec)} bytes): "
                                  f"{error}") from None
                try:
                    self._check_signature(received.signature, received.spec,
                                          received.weights_sha256)
                except TrustError as error:
                    raise Refused(grpc.StatusCode.PERMISSION_DENIED, str(error)) from None
                learning = spec.kind == task_pb2.TASK_KIND_LEARNING
                return pb.CreateTaskResponse(task_id=self.tasks.create(
                    spec, received.spec, caller().name, received.signature,
                    (weights, received.weights_checksum) if learning else None))
            finally:
                weights.unlink(missing_ok=True)

    def _check_signature(self, signature: task_pb2.TaskSignature | None, spec_bytes: bytes,
                         weights_sha256: bytes) -> None:
        """TrustError unless the task is signed by the caller, over these very bytes (with
        identities; without, a signature is not needed and not checked)."""
        if self.verifier is None:
            return
        if signature is None:
            raise TrustError("the task is not signed: create it with a Client that has a kit "
                             "(Client(kit=...) or DELTAFLOW_KIT), which signs it")
        signer, claims = self.verifier.verify_task(signature, spec_bytes)
        if signer.name != caller().name:
            raise TrustError(f"the task is signed by {signer.name}, not by the caller "
                             f"{caller().name}: submit your own tasks")
        if claims.weights_sha256 != weights_sha256:
            raise TrustError("the initial weights sent are not those the task's signature "
                             "covers")

    async def GetTask(self, request: pb.GetTaskRequest,
                      context: grpc.aio.ServicerContext) -> pb.TaskInfo:
        return self._info(await self._task(request.task_id, context))

    async def ListTasks(self, request: pb.ListTasksRequest,
                        context: grpc.aio.ServicerContext) -> pb.ListTasksResponse:
        """The newest tasks the caller may see, up to the count asked and LIST_BYTES: a page
        may hold fewer than asked; the next starts before its last."""
        limit = min(request.limit or 100, 1000)
        records = self.store.list_tasks(limit, request.before_task_id, visible_owner(caller()))
        reply, size = pb.ListTasksResponse(), 0
        for record in records:
            info = self._info(record)
            size += info.ByteSize()
            if reply.tasks and size > LIST_BYTES:
                break
            reply.tasks.append(info)
        return reply

    async def ListAudit(self, request: pb.ListAuditRequest,
                        context: grpc.aio.ServicerContext) -> pb.ListAuditResponse:
        limit = min(request.limit or 100, 1000)
        return pb.ListAuditResponse(entries=self.store.list_audit(limit, request.before_id))

    async def ListWorkers(self, request: pb.ListWorkersRequest,
                          context: grpc.aio.ServicerContext) -> pb.ListWorkersResponse:
        """Connected workers by name; when they connected and what they run, for admins only."""
        admin = caller().role in ("admin", ANONYMOUS.role)  # anonymous: no identities at all
        workers = []
        for session in sorted(self.tasks.registry.connected(), key=lambda s: s.name):
            info = pb.WorkerInfo(name=session.name, datasets=sorted(session.datasets))
            if admin:
                info.connected_at = session.connected_at
                info.running_tasks.extend(sorted(session.tasks))
            workers.append(info)
        return pb.ListWorkersResponse(workers=workers)

    async def StreamLogs(self, request: pb.StreamLogsRequest,
                         context: grpc.aio.ServicerContext) -> AsyncIterator[pb.LogEntry]:
        await self._task(request.task_id, context)
        offset = request.offset
        while True:
            changed = self.tasks.changed(request.task_id)
            entries = self.store.read_logs(request.task_id, offset)
            for entry in entries:
                yield entry
            if entries:
                offset = entries[-1].offset + 1
                continue
            task = self.store.get_task(request.task_id)
            if not request.follow or task is None or task.ended:
                return
            await changed.wait()

    async def GetResult(self, request: pb.GetResultRequest,
                        context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ResultChunk]:
        task = await self._task(request.task_id, context)
        if task.state != pb.TASK_STATE_FINISHED:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, _no_result(task))
        if task.kind == task_pb2.TASK_KIND_LEARNING:
            infos = self._spec(task.id).learning.weights
            preview = (f"{len(infos)} tensors: " + ", ".join(
                f"{i.name} {i.dtype}{list(i.shape)}" for i in infos))[:PREVIEW_CHARS]
            chunks = self.store.result_chunks(task.id, CHUNK_SIZE)  # checked: DataLoss
            chunk = await asyncio.to_thread(next, chunks, b"")
            yield pb.ResultChunk(format=TENSORS_FORMAT, preview=preview, chunk=chunk,
                                 tensors=infos)
            while chunk := await asyncio.to_thread(next, chunks, b""):
                yield pb.ResultChunk(chunk=chunk)
            return
        data = await asyncio.to_thread(b"".join, self.store.result_chunks(task.id, CHUNK_SIZE))
        message = values_pb2.Value()
        message.ParseFromString(data)
        preview = repr(values.decode(message))[:PREVIEW_CHARS]
        for index, chunk in enumerate(split_chunks(data)):
            if index == 0:
                yield pb.ResultChunk(format=VALUE_FORMAT, preview=preview, chunk=chunk)
            else:
                yield pb.ResultChunk(chunk=chunk)

    async def GetMetrics(self, request: pb.GetMetricsRequest,
                         context: grpc.aio.ServicerContext) -> pb.GetMetricsResponse:
        await self._task(request.task_id, context)
        return pb.GetMetricsResponse(rounds=[
            pb.RoundMetrics(round=number, workers=workers, metrics=metrics)
            for number, workers, metrics in self.store.load_metrics(request.task_id)
        ])

    async def CancelTask(self, request: pb.CancelTaskRequest,
                         context: grpc.aio.ServicerContext) -> pb.TaskInfo:
        task = await self._task(request.task_id, context)
        if task.ended:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"task {task.id} has already ended ({task.state_name})")
        self.tasks.cancel(task, caller().name)
        return self._info(await self._task(request.task_id, context))

    async def _task(self, task_id: int, context: grpc.aio.ServicerContext) -> TaskRecord:
        """The task, if the caller may see it; another user's task is as absent as one that
        does not exist, so its id tells nothing."""
        task = self.store.get_task(task_id)
        if task is None or not may_see(caller(), task.owner):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"task {task_id} does not exist")
        return task

    def _spec(self, task_id: int) -> task_pb2.TaskSpec:
        spec = task_pb2.TaskSpec()
        spec.ParseFromString(self.store.load_spec(task_id))
        return spec

    def _info(self, task: TaskRecord) -> pb.TaskInfo:
        spec = task_pb2.TaskSpec.FromString(task.summary)  # small: no code, no graph
        return pb.TaskInfo(
            task_id=task.id, name=task.name, kind=task.kind, state=task.state, error=task.error,
            created_at=task.created_at, finished_at=task.finished_at, rules=spec.rules,
            datasets=spec.datasets, log_length=self.store.log_length(task.id), owner=task.owner,
            workers=self.tasks.workers(task.id),
        )


def _validate(spec: task_pb2.TaskSpec, weights_bytes: int) -> None:
    """Raises ValueError or TaskError saying what is wrong with a parsed spec."""
    if spec.format_version != FORMAT_VERSION:
        raise ValueError(f"format_version is {spec.format_version}, expected {FORMAT_VERSION}; "
                         "build the task with the SDK's task.build()")
    rules = spec.rules
    check_rules(spec.name, rules.min_clients, rules.max_clients, rules.wait_timeout,
                rules.connection_timeout)
    check_secure(spec.secure_aggregation, spec.precision, 0, spec.secagg_plus_above,
                 Rule.of(spec).fraction)
    if not spec.datasets:
        raise ValueError("the task names no dataset")
    summary = len(spec.name.encode()) + sum(ref.ByteSize() for ref in spec.datasets)
    if summary > SUMMARY_BYTES:
        raise ValueError(f"its name and dataset references take {show_size(summary)}, more than "
                         f"the {show_size(SUMMARY_BYTES)} a task may use for them: name fewer "
                         "datasets")
    for ref in spec.datasets:
        check_relative_name(ref.file)
    if spec.kind == task_pb2.TASK_KIND_LEARNING:
        _validate_learning(spec.learning, weights_bytes)
        return
    if spec.kind != task_pb2.TASK_KIND_ANALYTICS:
        raise ValueError(f"unknown task kind {spec.kind}")
    if weights_bytes:
        raise ValueError("an analytics task carries no weights")
    if spec.secure_aggregation and rules.max_clients >= MAX_WORKERS:
        raise ValueError(f"max_clients is {rules.max_clients}: secure analytics supports fewer "
                         f"than {MAX_WORKERS} workers")
    plan = Plan(*Graph.from_proto(spec.analytics))
    missing = plan.source_arguments() - {ref.argument for ref in spec.datasets}
    if missing:
        raise ValueError(f"the graph reads datasets that the task does not name: {sorted(missing)}")


def _validate_learning(learning: task_pb2.LearningSpec, weights_bytes: int) -> None:
    if not learning.task:
        raise ValueError("the learning task has no code")
    if learning.max_rounds < 1 or learning.validate_interval < 1:
        raise ValueError("max_rounds and validate_interval must be at least 1")
    if not 0 <= learning.validate_frac < 1:
        raise ValueError(f"validate_frac must be in [0, 1), not {learning.validate_frac}")
    if (learning.merge_epoch > 0) == (learning.merge_iteration > 0):
        raise ValueError("exactly one of merge_epoch and merge_iteration must be set")
    if not learning.weights:
        raise ValueError("the learning task has no weights manifest")
    names = [info.name for info in learning.weights]
    if len(set(names)) != len(names):
        raise ValueError("the weights manifest names a tensor twice")
    for info in learning.weights:
        if info.dtype not in weights.ITEMSIZES:
            raise ValueError(f"tensor {info.name!r} has unsupported dtype {info.dtype!r}")
    expected = weights.total_bytes(list(learning.weights))
    if weights_bytes != expected:
        raise ValueError(f"the initial weights hold {weights_bytes} bytes; the manifest "
                         f"needs {expected}")


@dataclass
class _Received:
    """A CreateTask stream as received; the weights went to a file."""

    spec: bytes
    signature: task_pb2.TaskSignature | None
    weights_bytes: int
    weights_sha256: bytes  # empty without weights
    weights_checksum: Checksum


async def _receive(requests: AsyncIterator[pb.CreateTaskRequest], weights_path: Path,
                   limits: Limits) -> _Received:
    """Reads a CreateTask stream, a learning task's weights into the file `weights_path`;
    Refused past --max-task-bytes (all but the weights counts) or --max-model-bytes, or
    at an empty message (a stream of them would never end)."""
    chunks: list[bytes] = []
    spec_bytes = weights_bytes = 0
    digest, checksum = hashlib.sha256(), Checksum()
    signature: task_pb2.TaskSignature | None = None
    with open(weights_path, "wb") as weights_file:
        async for request in requests:
            size = request.ByteSize()
            if not size:
                raise invalid("not a valid built task: a message of the stream is empty; each "
                              "carries a piece of the task or of its weights")
            if request.HasField("signature"):
                signature = request.signature
            spec_bytes += size - len(request.weights_chunk)
            if spec_bytes > limits.max_task_bytes:
                raise exhausted("the task is larger than "
                                f"{bound('--max-task-bytes', show_size(limits.max_task_bytes))}")
            chunks.append(request.chunk)
            if request.weights_chunk:
                if not weights_bytes:  # the spec is whole: refuse too large a model at once
                    _check_model_size(b"".join(chunks), limits.max_model_bytes)
                weights_bytes += len(request.weights_chunk)
                if weights_bytes > limits.max_model_bytes:
                    raise exhausted("the initial weights are larger than " + bound(
                        "--max-model-bytes", show_size(limits.max_model_bytes)))
                weights_file.write(request.weights_chunk)
                digest.update(request.weights_chunk)
                checksum.update(request.weights_chunk)
    return _Received(b"".join(chunks), signature, weights_bytes,
                     digest.digest() if weights_bytes else b"", checksum)


def _check_model_size(spec_bytes: bytes, most: int) -> None:
    """Refused if the weights manifest of a learning task's spec declares more than
    `most` bytes; a spec that does not parse is left to validation."""
    spec = task_pb2.TaskSpec()
    try:
        spec.ParseFromString(spec_bytes)
        size = weights.total_bytes(list(spec.learning.weights))
    except (DecodeError, KeyError):
        return
    if size > most:
        raise exhausted(f"the initial weights are {show_size(size)}, over "
                        f"{bound('--max-model-bytes', show_size(most))}")


def _no_result(task: TaskRecord) -> str:
    if task.state == pb.TASK_STATE_ERROR:
        return f"task {task.id} failed, so it has no result: {task.error}"
    if task.state == pb.TASK_STATE_CANCELLED:
        return f"task {task.id} was cancelled, so it has no result"
    return f"task {task.id} is {task.state_name}; its result is ready once it has FINISHED"
