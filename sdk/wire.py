"""What every side of the wire shares: addresses, channel options, chunking."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

# The formats of a result stream (ResultChunk.format): what the client decodes it as.
VALUE_FORMAT = "deltaflow.v1.Value"  # an analytics result, a Value message
TENSORS_FORMAT = "deltaflow.v1.Tensors"  # learning weights: raw tensor bytes, manifest order

CHUNK_SIZE = 1 << 20  # bytes per streamed chunk: well under any gRPC message limit

MAX_MESSAGE = 16 << 20  # a chunk and its envelope, with room to spare

# Keepalive pings let both ends notice a peer that vanished without closing its connection,
# within a minute and a half. Not more often: with ten thousand workers connected, pings every
# 10 s took the idle coordinator 2.7% of a core per 2,000 workers, every 60 s 0.1%.
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.so_reuseport", 0),
    # A fixed 4 MiB flow-control window per stream, not one that BDP probing grows: what
    # workers' concurrent uploads may buffer in the coordinator stays bounded (25M parameters,
    # 8 workers: peak RSS 330-375 MiB instead of 420-515), at the same speed on this machine.
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", 4 << 20),
    # TLS records of at most 8 KiB from the coordinator: each connection's TLS layer keeps a
    # buffer of a whole record (16 KiB by default) that ten thousand idle workers' connections
    # each hold. 8 KiB is what gRPC's TLS layer writes at a time anyway: sending 500 MiB cost
    # the same, where 4 KiB records cost 30% more CPU and saved no more RSS.
    ("grpc.tsi.max_frame_size", 8 << 10),
]


def normalize_address(address: str) -> str:
    """HOST:PORT from "HOST:PORT", "http://HOST:PORT" or "grpc://HOST:PORT/"."""
    text = address.strip()
    for scheme in ("http://", "https://", "grpc://"):
        if text.lower().startswith(scheme):
            text = text[len(scheme):]
    text = text.rstrip("/")
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not a coordinator address: write HOST:PORT, e.g. 127.0.0.1:6700")
    return text


def split_chunks(data: bytes, size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """`data` in pieces of at most `size` bytes (one empty piece for empty data)."""
    view = memoryview(data)
    if not view:
        yield b""
    for piece in split_views(view, size):
        yield bytes(piece)


def split_views(data: bytes | memoryview, size: int = CHUNK_SIZE) -> Iterator[memoryview]:
    """Views of `data`, at most `size` bytes each (none for empty data): no copy."""
    view = memoryview(data).cast("B")
    for start in range(0, len(view), size):
        yield view[start:start + size]


# Bulk chunks skip protobuf's message objects: a message that holds one chunk (a DataChunk, an
# UploadRequest's chunk) is written and read as its wire bytes directly, in the same format,
# which spares two copies of every chunk on each side of a weights stream.

def encode_chunk(field: int, data: bytes | memoryview) -> bytes:
    """The wire bytes of a message whose only field, bytes field number `field`, is `data`."""
    data = memoryview(data).cast("B")
    length = len(data)
    header = bytearray([field << 3 | 2])
    while length > 0x7F:
        header.append(length & 0x7F | 0x80)
        length >>= 7
    header.append(length)
    return b"".join((header, data))


def decode_chunk(field: int, message: bytes) -> memoryview | None:
    """The bytes of `message`'s field `field` (no copy) when the message is that one bytes
    field alone, as encode_chunk writes it; None for any other message (parse that one)."""
    if not message or message[0] != field << 3 | 2:
        return None
    length = shift = 0
    for position in range(1, min(len(message), 11)):
        byte = message[position]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            start = position + 1
            return memoryview(message)[start:] if start + length == len(message) else None
    return None


def serialize(message: Any) -> bytes:
    """A message's wire bytes; bytes (from encode_chunk) as they are."""
    return message if isinstance(message, bytes) else message.SerializeToString()


def is_loopback(address: str) -> bool:
    """Whether HOST:PORT names this machine's loopback interface only."""
    host = address.rpartition(":")[0].strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
