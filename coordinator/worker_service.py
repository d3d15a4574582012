"""WorkerService: registration, the live channel, task downloads and answers from workers."""

from __future__ import annotations

import asyncio
import secrets
import unicodedata
from collections.abc import AsyncIterator

import grpc

from coordinator.auth import caller
from coordinator import calls
from coordinator.limits import Refused
from coordinator.registry import AlreadyConnected, WorkerRegistry, WorkerSession
from coordinator.store import Store
from sdk import values
from sdk.proto import services_pb2 as pb
from sdk.proto import services_pb2_grpc
from sdk.trust import ANONYMOUS, Verifier, check_name
from sdk.trust.identity import printable_name
from sdk.wire import CHUNK_SIZE, decode_chunk, encode_chunk, serialize, split_chunks

SERVICE = pb.DESCRIPTOR.services_by_name["WorkerService"].full_name


class WorkerService(services_pb2_grpc.WorkerServiceServicer):
    """Served through add_worker_service: FetchWeights yields chunks as wire bytes.

    With identities a worker is its certificate's name: it registers under that name only, and
    every later call names a session of that same worker."""

    def __init__(self, registry: WorkerRegistry, store: Store, verifier: Verifier | None) -> None:
        self.registry = registry
        self.store = store
        self.verifier = verifier
        self.coordinator_id = secrets.token_hex(8)  # tells workers this is a new start

    async def Register(self, request: pb.RegisterRequest,
                       context: grpc.aio.ServicerContext) -> pb.RegisterResponse:
        who = caller()
        if who is not ANONYMOUS and request.name != who.name:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"worker {who.name} may register only as {who.name}, "
                                f"not as {printable_name(request.name)}")
        try:
            check_name(request.name)
        except ValueError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"a worker's name: {error}")
        try:
            session = self.registry.register(request.name, request.datasets)
        except AlreadyConnected as error:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(error))
        if request.coordinator_id != self.coordinator_id:
            release = list(request.held_tasks)  # kept for a coordinator that is gone
        else:
            release = [task_id for task_id in request.held_tasks
                       if (task := self.store.get_task(task_id)) is None or task.ended]
            session.held = frozenset(request.held_tasks).difference(release)  # released at end
        crl = (self.verifier.crl_der or b"") if self.verifier is not None else b""
        return pb.RegisterResponse(session_id=session.session_id,
                                   heartbeat_interval=self.registry.heartbeat_interval,
                                   coordinator_id=self.coordinator_id, release_tasks=release,
                                   crl=crl)

    async def Connect(self, request_iterator: AsyncIterator[pb.WorkerMessage],
                      context: grpc.aio.ServicerContext) -> AsyncIterator[pb.CoordinatorMessage]:
        try:  # past this the session's timer bounds its silence, not the stall timeout
            async with asyncio.timeout(self.registry.heartbeat_timeout):
                first = await anext(aiter(request_iterator), None)
        except TimeoutError:
            first = None
        session = self._session(first.session_id) if first is not None else None
        if session is None or session.attached:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                "unknown or used session: register again")
        self.registry.attach(session)
        reader = asyncio.create_task(self._read(request_iterator, session))
        try:  # the registry's timer puts the session's heartbeats in its outbox
            while True:
                await session.outbox.ready()
                if (message := session.outbox.take()) is None:
                    break
                yield message
        finally:
            reader.cancel()
            self.registry.drop(session, "its connection closed")

    async def _read(self, requests: AsyncIterator[pb.WorkerMessage],
                    session: WorkerSession) -> None:
        try:
            async for message in requests:
                self.registry.saw(session)
                if message.HasField("datasets"):
                    self.registry.update_datasets(session, message.datasets.names)
            reason = "it closed its connection"
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            reason = "its connection broke"
        except Refused as error:  # a stall, or a list of datasets past a bound
            reason = str(error)
        except calls.Refused:
            reason = "it sent a message that is not valid"
        self.registry.drop(session, reason)

    async def FetchTask(self, request: pb.FetchTaskRequest,
                        context: grpc.aio.ServicerContext) -> AsyncIterator[pb.DataChunk]:
        await self._check_selected(request.session_id, request.task_id, context)
        data = await asyncio.to_thread(self.store.load_spec, request.task_id)
        signature = self.store.load_signature(request.task_id)
        for index, chunk in enumerate(split_chunks(data)):
            if index == 0 and signature is not None:
                yield pb.TaskChunk(chunk=chunk, signature=signature)
            else:
                yield pb.TaskChunk(chunk=chunk)

    async def FetchWeights(self, request: pb.FetchWeightsRequest,
                           context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        await self._check_selected(request.session_id, request.task_id, context)
        try:
            chunks = self.store.weights_chunks(request.task_id, CHUNK_SIZE)  # checked: DataLoss
        except FileNotFoundError:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"task {request.task_id} has no weights")
        # Read here, not in a thread: a 1 MiB read from the page cache is quick, and chunks
        # allocated and freed on one thread do not pile up in other threads' malloc arenas.
        for chunk in chunks:
            yield encode_chunk(1, chunk)  # a DataChunk's wire bytes

    async def _check_selected(self, session_id: str, task_id: int,
                              context: grpc.aio.ServicerContext) -> None:
        """Aborts the call unless the session's worker is selected for the task: a task's code
        and weights go to the workers that run it, and to no other."""
        session = self._session(session_id)
        if session is None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                "unknown session: register again")
        if task_id not in session.tasks:  # before NOT_FOUND: an outsider learns no task ids
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"worker {session.name} is not selected for task {task_id} (or "
                                "was dropped from it): only its workers download it")

    def _session(self, session_id: str) -> WorkerSession | None:
        """The live session of that id, if it is the caller's own."""
        session = self.registry.session(session_id)
        who = caller()
        if session is None or (who is not ANONYMOUS and session.name != who.name):
            return None
        return session

    async def Upload(self, request_iterator: AsyncIterator[pb.UploadRequest | memoryview],
                     context: grpc.aio.ServicerContext) -> pb.UploadResponse:
        first = await anext(aiter(request_iterator), None)
        if not isinstance(first, pb.UploadRequest) or not first.HasField("header"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "an upload starts with a header")
        header = first.header
        if self._session(header.session_id) is None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                "unknown session: register again")
        if header.note:
            self.registry.note(header.session_id, header.exchange_id, note_line(header.note))
        if header.error:
            accepted = self.registry.answer(header.session_id, header.exchange_id, None,
                                            f"it reported an error: {header.error}")
            return pb.UploadResponse(accepted=accepted)
        receiver = self.registry.claim(header.session_id, header.exchange_id)
        if receiver is None:
            return pb.UploadResponse(accepted=False)
        refusal = ""
        try:
            receiver.begin(values.decode(header.meta) if header.HasField("meta") else None)
            async for request in request_iterator:
                if isinstance(request, pb.UploadRequest) and not request.HasField("chunk"):
                    raise ValueError("an upload has one header, then chunks")
                receiver.write(request if isinstance(request, memoryview) else request.chunk)
            answer = receiver.finish()
        except asyncio.CancelledError:
            # The worker went away mid-upload: what it sent is discarded; nobody waits for it.
            receiver.discard()
            self.registry.answer(header.session_id, header.exchange_id, None,
                                 "its upload broke off")
            raise
        except Exception as error:  # noqa: BLE001 - whatever a worker sends, the daemon goes on
            receiver.discard()
            refusal = f"its upload was refused: {error}"
            self.registry.answer(header.session_id, header.exchange_id, None, refusal)
        if refusal and not context.done():  # done: a request was Refused, and answered so
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, refusal)
        if not self.registry.answer(header.session_id, header.exchange_id, answer, ""):
            receiver.discard()
            return pb.UploadResponse(accepted=False)
        return pb.UploadResponse(accepted=True)


NOTE_CHARS = 300  # the most of a worker's note the task log gets


def note_line(text: str) -> str:
    """A worker's note as one printable line of at most NOTE_CHARS characters: line breaks
    become spaces, other control and format characters are dropped."""
    line = "".join(" " if c in "\t\n\r" else c for c in text
                   if c in "\t\n\r" or unicodedata.category(c)[0] != "C").strip()
    return line if len(line) <= NOTE_CHARS else line[:NOTE_CHARS] + " ... (cut short)"


def add_worker_service(service: WorkerService, server: grpc.aio.Server) -> None:
    """Serves `service` as the generated code would, except that a weights download's chunks
    and an upload's go as raw wire bytes, with no message object (sdk.wire.encode_chunk)."""
    def upload_request(message: bytes) -> pb.UploadRequest | memoryview:
        chunk = decode_chunk(2, message)
        return chunk if chunk is not None else pb.UploadRequest.FromString(message)

    handlers = {
        "Register": grpc.unary_unary_rpc_method_handler(
            service.Register, pb.RegisterRequest.FromString, serialize),
        "Connect": grpc.stream_stream_rpc_method_handler(
            service.Connect, pb.WorkerMessage.FromString, serialize),
        "FetchTask": grpc.unary_stream_rpc_method_handler(
            service.FetchTask, pb.FetchTaskRequest.FromString, serialize),
        "FetchWeights": grpc.unary_stream_rpc_method_handler(
            service.FetchWeights, pb.FetchWeightsRequest.FromString, serialize),
        "Upload": grpc.stream_unary_rpc_method_handler(
            service.Upload, upload_request, serialize),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)
