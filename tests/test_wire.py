"""The wire: generated code is fresh, health and reflection answer, values round-trip."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from cluster import ROOT
from sdk import values
from sdk.wire import normalize_address, split_chunks


def test_generated_code_matches_the_protos(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), str(tmp_path)],
                   check=True, capture_output=True)
    committed = ROOT / "sdk" / "proto"
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(p.name for p in committed.iterdir() if p.suffix in (".py", ".pyi"))
    for name in names:
        assert (tmp_path / name).read_text() == (committed / name).read_text(), (
            f"sdk/proto/{name} is stale: run python scripts/gen_protos.py"
        )


def test_health_and_reflection_list_the_services(cluster):
    cluster.start_coordinator()
    with cluster.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "deltaflow.v1.TaskService", "deltaflow.v1.WorkerService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        database = ProtoReflectionDescriptorDatabase(channel)
        services = database.get_services()
        assert "deltaflow.v1.TaskService" in services
        task_service = database.FindFileContainingSymbol("deltaflow.v1.TaskService")
        assert task_service.package == "deltaflow.v1"
        assert "GetTask" in [m.name for m in task_service.service[0].method]


@pytest.mark.parametrize("value", [
    pd.DataFrame({"a": [1, 2, 3], "b": [1.5, np.nan, 2.0], "s": ["x", None, "z"],
                  "t": [True, False, True]}, index=pd.Index([10, 20, 30], name="id")),
    pd.Series([1.0, np.nan], index=["x", "y"], name="wage"),
    pd.Series([], dtype="int64"),
    (np.int64(3), {"k": np.float32(2.5), 7: [1.5, None, "x", True]}),
    np.float64("nan"),
])
def test_values_round_trip_with_dtypes_and_labels(value):
    decoded = values.decode(values.encode(value))
    if isinstance(value, pd.DataFrame):
        pd.testing.assert_frame_equal(decoded, value)
    elif isinstance(value, pd.Series):
        pd.testing.assert_series_equal(decoded, value)
    elif isinstance(value, float):
        assert np.isnan(decoded) and type(decoded) is type(value)
    else:
        assert decoded == value
        assert type(decoded[0]) is np.int64 and type(decoded[1]["k"]) is np.float32


def test_values_refuse_what_they_cannot_carry():
    with pytest.raises(TypeError, match="cannot send a value of type object"):
        values.encode(object())


@pytest.mark.parametrize("given,expected", [
    ("127.0.0.1:6700", "127.0.0.1:6700"),
    ("http://127.0.0.1:6700", "127.0.0.1:6700"),
    ("grpc://localhost:1/", "localhost:1"),
    ("[::1]:6700", "[::1]:6700"),
])
def test_addresses(given, expected):
    assert normalize_address(given) == expected


@pytest.mark.parametrize("bad", ["", "127.0.0.1", "http://host:port", "host:70000"])
def test_bad_addresses_say_how_to_write_one(bad):
    with pytest.raises(ValueError, match="write HOST:PORT"):
        normalize_address(bad)


def test_chunks_cover_the_data_exactly():
    data = bytes(range(256)) * 1000
    pieces = list(split_chunks(data, 1000))
    assert b"".join(pieces) == data and max(map(len, pieces)) == 1000
    assert list(split_chunks(b"")) == [b""]


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16_384, 1 << 20])
def test_raw_chunks_are_the_messages_protobuf_writes_and_reads(size):
    """Chunks written as raw wire bytes parse as DataChunk / UploadRequest, and protobuf's own
    serialization of a chunk reads back without a message object; anything else is left to
    protobuf (None)."""
    from sdk.proto import services_pb2 as pb
    from sdk.wire import decode_chunk, encode_chunk

    data = np.random.default_rng(size).bytes(size)
    assert pb.DataChunk.FromString(encode_chunk(1, data)).chunk == data
    assert pb.UploadRequest.FromString(encode_chunk(2, memoryview(data))).chunk == data
    assert bytes(decode_chunk(1, encode_chunk(1, data))) == data
    if size:  # protobuf writes no field for empty bytes
        assert bytes(decode_chunk(2, pb.UploadRequest(chunk=data).SerializeToString())) == data
    assert decode_chunk(1, encode_chunk(2, data)) is None
    header = pb.UploadRequest(header=pb.UploadHeader(session_id="s", exchange_id=size))
    assert decode_chunk(2, header.SerializeToString()) is None
    assert decode_chunk(1, encode_chunk(1, data) + b"\x10\x01") is None  # a second field
    words = np.frombuffer(data[:size - size % 8], dtype=np.uint64)  # not a byte view: its bytes
    assert pb.DataChunk.FromString(encode_chunk(1, memoryview(words))).chunk == words.tobytes()
