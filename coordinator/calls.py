"""What every call goes through besides authorization (`auth.Gate` applies it to each handler):
its requests decoded and in range, and the failures a handler leaves to it answered with a
status a client can act on.

grpc decodes a request before any handler or interceptor sees it, and answers a decoding failure
with UNKNOWN. `tolerant` makes a handler's decoder hand on a `Refusal` instead, which `checked`
(for one request) and `checked_stream` (for a stream of them) answer: the call is aborted with
it, so the caller has its status whatever the handler does next, and in a stream the handler
gets `Refused` to end on.
Every unsigned 64-bit number in a request (task ids, offsets, exchange ids) must fit SQLite's
integers: a larger one is OUT_OF_RANGE, for every method alike.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from coordinator.store import DataLoss
from coordinator.writes import WriteFailed

log = logging.getLogger("deltaflow.coordinator")

LARGEST = 2**63 - 1  # SQLite's largest integer: no id or offset goes beyond it

_UNSIGNED_64 = {FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64}


class Refused(Exception):
    """A request of a stream was refused; its caller has the status already."""


@dataclass(frozen=True)
class Refusal:
    """A request refused before its handler saw it, with the status that says why."""

    code: grpc.StatusCode
    details: str


def tolerant(decode: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """`decode` (a handler's request deserializer), answering a Refusal where it fails or a
    number is out of range."""
    if decode is None:
        return None

    def decoded(data: bytes) -> Any:
        try:
            message = decode(data)
        except Exception as error:  # noqa: BLE001 - DecodeError, or a custom decoder's error
            return Refusal(grpc.StatusCode.INVALID_ARGUMENT,
                           f"the request is not a valid message of this method ({error}): "
                           "send the request type its .proto names")
        return _out_of_range(message) or message

    return decoded


async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
    """`request`, unless it is a Refusal: then the call is aborted with it."""
    if isinstance(request, Refusal):
        await context.abort(request.code, request.details)
    return request


async def checked_stream(requests: AsyncIterator[Any],
                         context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
    """`requests` until one is a Refusal: then the call is aborted with it, and Refused raised
    (for the handler to clean up after, as after any failure of its own)."""
    async for request in requests:
        if isinstance(request, Refusal):
            try:
                await context.abort(request.code, request.details)
            except grpc.aio.AbortError:
                raise Refused(request.details) from None
        yield request


def status_of(error: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """The status that answers a handler's failure, where it is one a client can act on."""
    if isinstance(error, DataLoss):
        log.error("%s", error)
        return grpc.StatusCode.DATA_LOSS, str(error)
    if isinstance(error, WriteFailed):  # logged where it happened; retried once health serves
        return grpc.StatusCode.UNAVAILABLE, str(error)
    return None


def _out_of_range(message: Any) -> Refusal | None:
    """A Refusal naming the first unsigned 64-bit field of `message` (nested ones included)
    beyond LARGEST; None when all are in range."""
    if not isinstance(message, Message):
        return None
    for field, value in message.ListFields():
        repeated = field.is_repeated
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                continue  # no request carries a map of numbers
            for item in (value if repeated else [value]):
                if refusal := _out_of_range(item):
                    return refusal
        elif field.type in _UNSIGNED_64:
            for number in (value if repeated else [value]):
                if number > LARGEST:
                    return Refusal(grpc.StatusCode.OUT_OF_RANGE,
                                   f"{field.name} {number} is out of range: ids and offsets "
                                   f"are at most {LARGEST}")
    return None
