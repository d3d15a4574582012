"""Who may call what: one gate in front of every RPC, by the caller's certificate.

The gate is the server's only interceptor. For each call it reads the peer's certificate (which
mutual TLS has already checked against the federation's CA), refuses a revoked one, looks the
method up in `METHODS` (a method missing from it is refused: default deny), records the audit
entry, and sets `caller()` for the handler. Without identities (`--insecure`, loopback only)
every caller is `ANONYMOUS` and may call everything. It also ends calls from outside their
handlers: those of a caller whose certificate is revoked, and all of them when the coordinator
stops; it puts every handler behind `calls` (requests checked, failures answered); and it
counts every call, its status code, time and bytes (`metrics`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import grpc

from coordinator import calls, metrics
from sdk.proto import services_pb2 as pb
from sdk.trust import ANONYMOUS, USER_ROLES, Identity, TrustError, Verifier, identity_from_pem

log = logging.getLogger("deltaflow.coordinator")

_USERS = frozenset(USER_ROLES)
_ADMINS = frozenset({"admin"})
_WORKERS = frozenset({"worker"})
_ANYONE = frozenset({"admin", "analyst", "worker", "coordinator"})

_TASKS = pb.DESCRIPTOR.services_by_name["TaskService"].full_name
_WORKER = pb.DESCRIPTOR.services_by_name["WorkerService"].full_name

# Every method the port serves, and the roles that may call it.
METHODS: dict[str, frozenset[str]] = {
    **{f"/{_TASKS}/{name}": _USERS for name in (
        "CreateTask", "GetTask", "ListTasks", "StreamLogs", "GetResult", "CancelTask",
        "GetMetrics", "ListWorkers")},
    f"/{_TASKS}/ListAudit": _ADMINS,
    **{f"/{_WORKER}/{name}": _WORKERS for name in (
        "Register", "Connect", "FetchTask", "FetchWeights", "Upload")},
    "/grpc.health.v1.Health/Check": _ANYONE,
    "/grpc.health.v1.Health/Watch": _ANYONE,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": _ANYONE,
}

_NEEDED = {_USERS: "a user (admin or analyst)", _ADMINS: "an admin", _WORKERS: "a worker"}

# Calls recorded in the audit log whatever their outcome; any other call only when refused.
AUDITED = {f"/{_TASKS}/CreateTask": "create_task", f"/{_TASKS}/CancelTask": "cancel_task",
           f"/{_TASKS}/GetResult": "get_result", f"/{_WORKER}/Register": "register"}
_REFUSALS = {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED,
             grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS}

AUDIT_FIELD_CHARS = 256  # the most of a caller's text (a name, a refusal) an audit entry keeps

_CALLER: ContextVar[Identity] = ContextVar("deltaflow_caller")

# The audit log's sink: (caller, role, action, target, outcome, detail).
Record = Callable[[str, str, str, str, str, str], None]


def caller() -> Identity:
    """Who is making the call being handled (set by the gate)."""
    return _CALLER.get()


def may_see(who: Identity, owner: str) -> bool:
    """Whether `who` may see and cancel a task of `owner`: its owner, or an admin."""
    return who.role == "admin" or who.name == owner


def visible_owner(who: Identity) -> str | None:
    """The owner whose tasks `who` may list; None for all of them (an admin)."""
    return None if who.role == "admin" else who.name


class Ended(Exception):
    """A call ended from outside its handler, with the status its caller gets."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


STOPPING = "the coordinator is stopping; call again once it is back"


class Call:
    """One admitted call: who makes it, and the task handling it, which `end` cancels, keeping
    why. No task or future of its own: ten thousand workers' live channels are calls."""

    def __init__(self, who: Identity) -> None:
        self.who = who
        self.ended: Ended | None = None
        self._task: asyncio.Task[Any] | None = asyncio.current_task()

    def end(self, reason: Ended) -> None:
        """Ends the call with `reason`, unless it has ended or its handler has returned."""
        if self.ended is None and self._task is not None:
            self.ended = reason
            self._task.cancel()

    async def until_ended(self, step: Any) -> Any:
        """Awaits `step` (the handler); raises the Ended if the call is ended first."""
        try:
            return await step
        except asyncio.CancelledError:
            if self.ended is None:  # the call was cancelled (its caller went away)
                raise
            asyncio.current_task().uncancel()
            raise self.ended from None
        finally:
            self._task = None


class Gate(grpc.aio.ServerInterceptor):
    """Authenticates, authorizes and audits every call; `verifier` None means no identities."""

    def __init__(self, verifier: Verifier | None, record: Record) -> None:
        self.verifier = verifier
        self.record = record
        self._calls: set[Call] = set()
        self._closed = False
        self._wrappers = Wrappers(lambda handler, method: _wrap(handler, self, method))

    async def intercept_service(self, continuation: Callable[..., Any],
                                details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:
            return None
        return self._wrappers(handler, details.method)

    def end_revoked(self) -> int:
        """Ends the calls of callers whose certificate is now revoked; how many it ended."""
        if self.verifier is None:
            return 0
        ended = [call for call in self._calls if call.ended is None
                 and self.verifier.is_revoked(call.who.serial)]
        for call in ended:
            call.end(Ended(grpc.StatusCode.UNAUTHENTICATED,
                           f"the certificate of {call.who.name} was revoked"))
        return len(ended)

    def close(self) -> None:
        """Ends every call (UNAVAILABLE, so that workers and followers call again once the
        coordinator is back) and refuses new ones: the coordinator is stopping."""
        self._closed = True
        for call in self._calls:
            call.end(Ended(grpc.StatusCode.UNAVAILABLE, STOPPING))

    async def admit(self, method: str, context: grpc.aio.ServicerContext) -> Call:
        """The call of an authenticated caller allowed to call `method`; aborts it otherwise."""
        if self._closed:
            await context.abort(grpc.StatusCode.UNAVAILABLE, STOPPING)
        who = ANONYMOUS
        if self.verifier is not None:
            pem = context.auth_context().get("x509_pem_cert")
            try:
                if not pem:
                    raise TrustError("the caller presented no certificate")
                who = identity_from_pem(pem[0])
                if self.verifier.is_revoked(who.serial):
                    raise TrustError(f"the certificate of {who.name} was revoked")
            except TrustError as error:
                self._audit(who, method, grpc.StatusCode.UNAUTHENTICATED, str(error), "")
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(error))
            allowed = METHODS.get(method)
            if allowed is None or who.role not in allowed:
                needed = _NEEDED.get(allowed, "another role") if allowed else "nobody"
                refusal = (f"{who.name} ({who.role}) may not call {method.rsplit('/', 1)[-1]}: "
                           f"only {needed} may")
                self._audit(who, method, grpc.StatusCode.PERMISSION_DENIED, refusal, "")
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, refusal)
        _CALLER.set(who)
        call = Call(who)
        self._calls.add(call)
        return call

    async def end(self, call: Call, method: str, context: grpc.aio.ServicerContext,
                  request: Any, response: Any, error: BaseException | None) -> None:
        """Forgets the call, records it where the audit log wants it, and aborts it with the
        status `error` calls for, if it is one it knows (an Ended, or one of `calls`)."""
        self._calls.discard(call)
        status = ((error.code, error.details) if isinstance(error, Ended)
                  else calls.status_of(error) if error is not None else None)
        if status is not None:
            code, detail = status
        else:
            code = _code(context, error)
            detail = (context.details() or "") if code != grpc.StatusCode.OK else ""
        if method in AUDITED or code in _REFUSALS:
            self._audit(call.who, method, code, detail, _target(request, response))
        if status is not None and not context.done():
            await context.abort(*status)

    def _audit(self, who: Identity, method: str, code: grpc.StatusCode, detail: str,
               target: str) -> None:
        action = AUDITED.get(method, method.rsplit("/", 1)[-1])
        outcome = "ok" if code == grpc.StatusCode.OK else code.name
        try:
            self.record(who.name, who.role, _field(action), _field(target), outcome,
                        _field(detail))
        except Exception:  # noqa: BLE001 - a failed audit write must not fail the call
            log.exception("could not record the audit entry for %s by %s", action, who.name)


def _code(context: grpc.aio.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    """The status code a call ended with: CANCELLED if it was, else the one its handler set or
    aborted with, else OK (UNKNOWN for an error)."""
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    code = context.code()
    if isinstance(code, int) or code is None:
        code = grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN
    return code


def _answered(error: BaseException, context: grpc.aio.ServicerContext) -> bool:
    """Whether the call ended on a status already sent (a refused request, or the call ended
    after that): its handler's end is then no failure to report."""
    return isinstance(error, (Ended, calls.Refused)) and context.done()


def _field(text: str, limit: int = AUDIT_FIELD_CHARS) -> str:
    """`text` as the audit log keeps it: control characters escaped, so that no caller can
    forge an entry, and at most `limit` characters, so that none can flood it."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return shown + "..." if len(text) > limit else shown


def _target(request: Any, response: Any) -> str:
    """What a call was about, in the audit log's words: "task 7", "worker hospital-a"."""
    for message in (request, response):
        if isinstance(message, pb.RegisterRequest):
            return f"worker {message.name}"
        task_id = getattr(message, "task_id", 0) if hasattr(message, "DESCRIPTOR") else 0
        if task_id:
            return f"task {task_id}"
    return ""


class Wrappers:
    """Each method's handler wrapped once by `wrap(handler, method)`, not at every call: ten
    thousand workers' live channels then share one wrapper's closures instead of holding their
    own. Kept per method (a bounded set: those the server serves) for the handler it wraps."""

    def __init__(self, wrap: Callable[[grpc.RpcMethodHandler, str], grpc.RpcMethodHandler]
                 ) -> None:
        self._wrap = wrap
        self._by_method: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def __call__(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        known = self._by_method.get(method)
        if known is None or known[0] is not handler:
            known = self._by_method[method] = (handler, self._wrap(handler, method))
        return known[1]


def behavior_of(handler: grpc.RpcMethodHandler) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The handler's behavior, and the function that makes a handler of the same kind."""
    if handler.request_streaming and handler.response_streaming:
        return handler.stream_stream, grpc.stream_stream_rpc_method_handler
    if handler.request_streaming:
        return handler.stream_unary, grpc.stream_unary_rpc_method_handler
    if handler.response_streaming:
        return handler.unary_stream, grpc.unary_stream_rpc_method_handler
    return handler.unary_unary, grpc.unary_unary_rpc_method_handler


def _wrap(handler: grpc.RpcMethodHandler, gate: Gate, method: str) -> grpc.RpcMethodHandler:
    """`handler` behind the gate, keeping its kind and its serializers (WorkerService's
    raw-bytes ones among them), its requests checked by `calls`. Every handler reaches the
    gate as a coroutine: a streamed response is written by `limits.StreamGuard`, the
    interceptor inside it."""
    behavior, make = behavior_of(handler)

    async def requests(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if handler.request_streaming:
            return calls.checked_stream(request, context)
        return await calls.checked(request, context)

    async def gated(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started, error = time.perf_counter(), None  # the call's time, its code, and its method
        try:
            call = await gate.admit(method, context)
            try:
                response = await call.until_ended(
                    behavior(await requests(request, context), context))
            except BaseException as failure:
                await gate.end(call, method, context, request, None, failure)
                if _answered(failure, context):
                    return None
                raise
            await gate.end(call, method, context, request, response, None)
            return response
        except BaseException as raised:
            error = raised
            raise
        finally:
            metrics.rpc_handled(method, _code(context, error), time.perf_counter() - started)

    deserialize = _counted(calls.tolerant(handler.request_deserializer), method)
    return make(gated, request_deserializer=deserialize,
                response_serializer=_counting(handler.response_serializer, method))


def _counted(deserialize: Callable[[bytes], Any] | None, method: str) -> Callable[[bytes], Any]:
    """`deserialize` (None: the bytes as they are), counting the bytes it is given."""
    def counted(data: bytes) -> Any:
        metrics.rpc_bytes(method, received=len(data))
        return deserialize(data) if deserialize is not None else data
    return counted


def _counting(serialize: Callable[[Any], bytes] | None, method: str) -> Callable[[Any], bytes]:
    """`serialize` (None: the bytes as they are), counting the bytes it makes."""
    def counting(message: Any) -> bytes:
        data = serialize(message) if serialize is not None else message
        metrics.rpc_bytes(method, sent=len(data))
        return data
    return counting
