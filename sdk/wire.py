"""What every side of the wire shares: addresses, channel options, chunking."""

from __future__ import annotations

from collections.abc import Iterator

# The formats of a result stream (ResultChunk.format): what the client decodes it as.
VALUE_FORMAT = "deltaflow.v1.Value"  # an analytics result, a Value message
TENSORS_FORMAT = "deltaflow.v1.Tensors"  # learning weights: raw tensor bytes, manifest order

CHUNK_SIZE = 1 << 20  # bytes per streamed chunk: well under any gRPC message limit

MAX_MESSAGE = 16 << 20  # a chunk and its envelope, with room to spare

# Keepalive pings let both ends notice a peer that vanished without closing its connection.
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.so_reuseport", 0),
    # A fixed 4 MiB flow-control window per stream, not one that BDP probing grows: what
    # workers' concurrent uploads may buffer in the coordinator stays bounded (25M parameters,
    # 8 workers: peak RSS 330-375 MiB instead of 420-515), at the same speed on this machine.
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", 4 << 20),
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
    for start in range(0, len(view), size):
        yield bytes(view[start:start + size])
