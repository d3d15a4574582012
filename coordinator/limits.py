"""Every bound on what callers can make the coordinator hold, and the one place streams keep it.

A bound that is reached answers RESOURCE_EXHAUSTED (too much, too many, too slow) or
INVALID_ARGUMENT (a request that could never be served) with a sentence naming the limit and
the flag that raises it. Handlers and the registry raise `Refused`; `StreamGuard`, the server's
interceptor after `auth.Gate`, answers it with its status for every method, counts each user's
open streams, and closes a stream whose peer stalls past `--stream-stall-timeout`: one that sends
nothing while its request stream is read (but a worker's live channel, which the heartbeat
timeout bounds), or takes nothing while responses wait.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import grpc

from coordinator.auth import Wrappers, behavior_of, caller
from sdk.proto import services_pb2 as pb
from sdk.sizes import GiB, MiB, parse_size, show_size

log = logging.getLogger("deltaflow.coordinator")

_WORKER_SERVICE = pb.DESCRIPTOR.services_by_name["WorkerService"].full_name
# A worker's live channel: its silence is bounded by --heartbeat-timeout (the registry drops
# the worker), which may be longer than the stall timeout, since heartbeats are slow.
_LIVE_CHANNEL = f"/{_WORKER_SERVICE}/Connect"


@dataclass(frozen=True)
class Limits:
    """The coordinator's bounds; the defaults are its flags' defaults."""

    max_task_bytes: int = 256 * MiB  # a built task as CreateTask receives it
    max_model_bytes: int = 16 * GiB  # a learning task's initial weights
    max_tasks_per_user: int = 100  # pending, running or being created, per user
    max_streams_per_user: int = 64  # streaming calls open at once, per user (not workers)
    stream_stall_timeout: float = 60.0  # seconds a stream's peer may send or take nothing
    max_worker_datasets: int = 10_000  # dataset names one worker may offer
    max_log_line_chars: int = 64 * 1024  # a line of a task's log, and a task's error


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `Limits`, in a group of their own."""
    defaults = Limits()
    group = parser.add_argument_group(
        "limits", "bounds on what one caller can make the coordinator hold; a call past one is "
                  "refused with a sentence that names the flag")
    group.add_argument("--max-task-bytes", type=_size, default=defaults.max_task_bytes,
                       metavar="SIZE", help="the largest built task CreateTask takes "
                       f"(default {show_size(defaults.max_task_bytes)}; e.g. 512MiB)")
    group.add_argument("--max-model-bytes", type=_size, default=defaults.max_model_bytes,
                       metavar="SIZE", help="the largest initial weights of a learning task "
                       f"(default {show_size(defaults.max_model_bytes)})")
    group.add_argument("--max-tasks-per-user", type=_positive(int),
                       default=defaults.max_tasks_per_user, metavar="N",
                       help="tasks one user may have pending, running or being created at once "
                            "(default %(default)s)")
    group.add_argument("--max-streams-per-user", type=_positive(int),
                       default=defaults.max_streams_per_user, metavar="N",
                       help="streaming calls (log follows, result downloads, task uploads) one "
                            "user may have open at once (default %(default)s)")
    group.add_argument("--stream-stall-timeout", type=_positive(float),
                       default=defaults.stream_stall_timeout, metavar="SECONDS",
                       help="a stream whose peer sends nothing, or takes nothing, for this long "
                            "is closed (default %(default)s)")
    group.add_argument("--max-worker-datasets", type=_positive(int),
                       default=defaults.max_worker_datasets, metavar="N",
                       help="dataset names one worker may offer (default %(default)s)")
    group.add_argument("--max-log-line-chars", type=_positive(int),
                       default=defaults.max_log_line_chars, metavar="N",
                       help="a longer line of a task's log (a worker's error, say) is cut "
                            "(default %(default)s)")


def from_args(args: argparse.Namespace) -> Limits:
    return Limits(args.max_task_bytes, args.max_model_bytes, args.max_tasks_per_user,
                  args.max_streams_per_user, args.stream_stall_timeout,
                  args.max_worker_datasets, args.max_log_line_chars)


def _size(text: str) -> int:
    try:
        size = parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if not size:
        raise argparse.ArgumentTypeError("a limit must be more than 0 bytes")
    return size


def _positive(kind: Callable[[str], int | float]) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its errors
    return parse


class Refused(Exception):
    """A call refused: `code`, and the sentence that says why (for a bound: which, and the flag
    that raises it). Unlike `context.abort`, whose exception holds the handler's frames (and
    its request) in a cycle with the call until a full garbage collection, it is answered by
    setting the status, and all of it is freed as the call ends."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def bound(flag: str, value: int | str) -> str:
    """How a message names a bound: "this coordinator's --max-task-bytes of 256 MiB"."""
    shown = f"{value:,}" if isinstance(value, int) else value
    return f"this coordinator's {flag} of {shown}"


def exhausted(message: str) -> Refused:
    return Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


def invalid(message: str) -> Refused:
    return Refused(grpc.StatusCode.INVALID_ARGUMENT, message)


def cut_line(text: str, chars: int) -> str:
    """`text` as a task's log keeps it: at most `chars` characters, and a note if it was cut."""
    if len(text) <= chars:
        return text
    return f"{text[:chars]} [{len(text) - chars:,} more characters cut: over " \
           f"{bound('--max-log-line-chars', chars)}]"


class PerUser:
    """How many of something (streams, tasks being received) each user holds now."""

    def __init__(self) -> None:
        self._held: Counter[str] = Counter()

    def __getitem__(self, user: str) -> int:
        return self._held[user]

    @contextmanager
    def hold(self, user: str) -> Iterator[None]:
        """Counts one more for `user` while the block runs."""
        self._held[user] += 1
        try:
            yield
        finally:
            self._held[user] -= 1
            if not self._held[user]:
                del self._held[user]


class StreamGuard(grpc.aio.ServerInterceptor):
    """Answers `Refused` with its status for every method; bounds each user's open streams and
    every stream's stalls. Goes after `auth.Gate`, which sets `caller()`."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._open = PerUser()  # streams open
        self._wrappers = Wrappers(lambda handler, method: _guard(handler, self, method))

    async def intercept_service(self, continuation: Callable[..., Any],
                                details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:
            return None
        return self._wrappers(handler, details.method)

    @contextmanager
    def stream(self) -> Iterator[None]:
        """Holds one of the caller's streams open."""
        user = caller().name
        most = self.limits.max_streams_per_user
        if self._open[user] >= most:
            raise exhausted(f"{user} already has {self._open[user]} streams open (log follows, "
                            "result downloads, task uploads), the most allowed by "
                            f"{bound('--max-streams-per-user', most)}; close one first")
        with self._open.hold(user):
            yield

    async def requests(self, requests: AsyncIterator[Any], method: str) -> AsyncIterator[Any]:
        """`requests`, each awaited at most --stream-stall-timeout."""
        stall = self.limits.stream_stall_timeout
        iterator = aiter(requests)
        while True:
            try:
                async with asyncio.timeout(stall):
                    request = await anext(iterator)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise self._stalled(method, "sent nothing") from None
            yield request

    async def send(self, context: grpc.aio.ServicerContext, response: Any, method: str) -> None:
        """Writes `response`, waiting at most --stream-stall-timeout for the peer to make room."""
        try:
            async with asyncio.timeout(self.limits.stream_stall_timeout):
                await context.write(response)
        except TimeoutError:
            raise self._stalled(method, "took nothing") from None

    def _stalled(self, method: str, what: str) -> Refused:
        stall = self.limits.stream_stall_timeout
        name = method.rsplit("/", 1)[-1]
        log.info("closed a %s stream of %s: its peer %s for %g s", name, caller().name, what,
                 stall)
        return exhausted(f"{name} closed: the stream's peer {what} within "
                         f"{bound('--stream-stall-timeout', f'{stall:g} s')}; call again to "
                         "go on")


def _guard(handler: grpc.RpcMethodHandler, guard: StreamGuard,
           method: str) -> grpc.RpcMethodHandler:
    """`handler` behind the guard, keeping its serializers. A streaming response is written
    here, each message within the stall timeout, so the handler becomes a coroutine."""
    behavior, make = behavior_of(handler)
    streaming = handler.request_streaming or handler.response_streaming
    responses_streamed = inspect.isasyncgenfunction(behavior)
    # Workers' streams are bounded by their sessions, and not counted.
    counted = not method.startswith(f"/{_WORKER_SERVICE}/")

    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            if not streaming:
                return await behavior(request, context)
            with guard.stream() if counted else nullcontext():
                if handler.request_streaming and method != _LIVE_CHANNEL:
                    request = guard.requests(request, method)
                if not responses_streamed:
                    return await behavior(request, context)
                async with aclosing(behavior(request, context)) as responses:
                    async for response in responses:
                        await guard.send(context, response, method)
                return None
        except Refused as error:
            context.set_code(error.code)
            context.set_details(str(error))
            return None

    return make(guarded, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
