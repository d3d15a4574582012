"""The worker daemon's side of a learning task, in process: the fixed-point encoding of raw
weights, the initial weights' digest checked before any engine task starts, and the initial
weights downloaded once."""

from __future__ import annotations

import asyncio
import hashlib

import numpy as np
import pytest
import torch
from learning_tasks import Regression, regression_data

from sdk import tensors, weights
from sdk.proto import services_pb2 as pb
from sdk.proto import task_pb2
from sdk.secagg import fixedpoint
from sdk.weights import ITEMSIZES
from sdk.wire import encode_chunk, split_views
from worker.engine import EngineSession
from worker.learning_job import LearningJob, WeightsMismatch, masked_input


def torch_encoding(state: tensors.StateDict, precision: int, max_clients: int,
                   samples: int) -> np.ndarray:
    """The weights' part of the vector as the engine task encoded it from tensors, before the
    daemon did it from raw bytes."""
    out = np.zeros(sum(t.numel() for t in state.values()), dtype=np.uint64)
    start = 0
    for tensor in state.values():
        flat = tensor.reshape(-1)
        if flat.dtype == torch.bfloat16:
            flat = flat.float()
        fixedpoint.encode_into(out[start:start + flat.numel()], flat.numpy(),
                               samples * 10.0**precision, precision, 3, add=True)
        start += flat.numel()
    return out


def test_raw_bytes_encode_as_the_tensors_did_for_every_dtype():
    generator = torch.Generator().manual_seed(0)
    state = {}
    for name in ITEMSIZES:
        dtype = tensors.DTYPES[name]
        if dtype.is_floating_point:
            state[name] = torch.randn(1000, generator=generator).to(dtype) * 100
        elif dtype == torch.bool:
            state[name] = torch.rand(1000, generator=generator) > 0.5
        else:
            info = torch.iinfo(dtype)
            state[name] = torch.randint(max(info.min, -10**6), min(info.max, 10**6), (1000,),
                                        generator=generator, dtype=dtype)
    state["scalar"] = torch.tensor(7)
    state["empty"] = torch.zeros(0, 3, dtype=torch.bfloat16)
    infos = tensors.manifest(state)
    raw = memoryview(b"".join(tensors.iter_chunks(state)))
    words = sum(t.numel() for t in state.values())
    masks = np.zeros(words + 2 + 16, dtype=np.uint64)
    vector = masked_input(raw, infos, 17, 3, {}, 6, 3, masks)
    expected = torch_encoding(state, 6, 3, 17)
    start = 0
    for name, tensor in state.items():
        np.testing.assert_array_equal(vector[start:start + tensor.numel()],
                                      expected[start:start + tensor.numel()], err_msg=name)
        start += tensor.numel()


class FakeChannel:
    """Serves `weights` to FetchWeights as the coordinator would, in raw chunks."""

    def __init__(self, weights: bytes) -> None:
        self.weights = weights

    def unary_stream(self, method, request_serializer, response_deserializer):
        assert method.endswith("/FetchWeights")

        async def chunks(request):
            for piece in split_views(self.weights, 1000):
                yield response_deserializer(encode_chunk(1, piece))
        return chunks


class NoEngine:
    """An engine that must not be asked to start anything."""

    opened = False

    async def open_async(self, task):
        NoEngine.opened = True
        raise AssertionError("the engine task was started")


def test_initial_weights_unlike_the_signed_digest_fail_the_load_before_the_engine(tmp_path):
    state = {"w": torch.arange(3000, dtype=torch.float32)}
    weights = b"".join(tensors.iter_chunks(state))
    spec = task_pb2.TaskSpec(kind=task_pb2.TASK_KIND_LEARNING)
    spec.learning.weights.extend(tensors.manifest(state))
    job = LearningJob(7, spec, tmp_path / "train.npz", tmp_path)
    shared = job.weights.path
    with pytest.raises(WeightsMismatch, match="the initial weights do not match the digest "
                                              "its submitter signed"):
        asyncio.run(job.open(NoEngine(), FakeChannel(weights), "session",
                             expected_weights_sha256=hashlib.sha256(b"other").digest()))
    assert not NoEngine.opened
    assert job.initial_sha256 == hashlib.sha256(weights).digest()
    assert not shared.exists()  # the failed job left no shared memory behind


class CountingChannel(FakeChannel):
    """A FakeChannel that counts downloads and keeps each upload's bytes."""

    def __init__(self, weights: bytes) -> None:
        super().__init__(weights)
        self.downloads = 0
        self.uploads: list[bytes] = []

    def unary_stream(self, method, request_serializer, response_deserializer):
        fetch = super().unary_stream(method, request_serializer, response_deserializer)

        def counted(request):
            self.downloads += 1
            return fetch(request)
        return counted

    def stream_unary(self, method, request_serializer, response_deserializer):
        assert method.endswith("/Upload")

        async def upload(requests):
            chunks = [pb.UploadRequest.FromString(bytes(r)).chunk for r in requests
                      if not isinstance(r, pb.UploadRequest)]
            self.uploads.append(b"".join(chunks))
            return pb.UploadResponse(accepted=True)
        return upload


def test_round_1_trains_the_initial_weights_downloaded_once(tmp_path):
    """The initial weights come down once, for the engine task's load, and round 1 trains them
    as they are; round 2 downloads its global weights (here the initial ones again, so that it
    trains what round 1 trained: full-batch SGD without momentum is deterministic)."""
    built = Regression(max_rounds=2, secure_aggregation=False).build()
    weights = b"".join(tensors.iter_chunks(built.weights))
    np.savez(tmp_path / "train.npz", **regression_data(60, 0))
    channel = CountingChannel(weights)

    async def rounds() -> list[int]:
        job = LearningJob(7, built.spec, tmp_path / "train.npz", tmp_path / "work")
        with EngineSession(tmp_path / "engine") as engine:
            await job.open(engine, channel, "session")
            downloads = [channel.downloads]
            try:
                for number in (1, 2):
                    assert await job.train(channel, "session", number, number, False, None)
                    downloads.append(channel.downloads)
            finally:
                await job.close()
        return downloads

    assert asyncio.run(rounds()) == [1, 1, 2]
    first, second = channel.uploads
    assert first == second != weights


def test_an_update_beyond_the_update_bound_is_refused_by_name_never_wrapped():
    """In 32-bit words a worker refuses to send an update whose sum over max_clients workers
    could wrap: the error names the tensor and the task's update_bound, never a value."""
    trained = {"a": torch.zeros(3), "b": torch.tensor([0.0, 400.25, 0.0])}
    global_ = {"a": torch.zeros(3), "b": torch.zeros(3)}
    infos = tensors.manifest(trained)
    raw, base = (memoryview(b"".join(tensors.iter_chunks(s))) for s in (trained, global_))
    masks = np.zeros(weights.secure_length(infos, 32), dtype=np.uint32)
    with pytest.raises(fixedpoint.FixedPointOverflow) as refused:  # 400.25 * 2 samples * 10^6 * 3 > 2^31
        masked_input(raw, infos, 2, 0, {}, 6, 3, masks, base)
    assert str(refused.value).startswith("tensor 'b': its update times this worker's training "
                                         "samples is beyond the task's update_bound")
    assert "2^31" in str(refused.value) and "400" not in str(refused.value)
    assert refused.value.index == 1
    masked_input(raw, infos, 1, 0, {}, 6, 3, masks, base)  # one sample: it fits


def test_weights_loaded_for_a_later_round_never_train_an_earlier_one(tmp_path):
    """Weights loaded for round 2 (a resumed task's checkpoint, unchecked) cannot be trained as
    round 1, whose weights must be those the submitter signed."""
    built = Regression(max_rounds=2, secure_aggregation=False).build()
    weights = b"".join(tensors.iter_chunks(built.weights))
    np.savez(tmp_path / "train.npz", **regression_data(60, 0))
    channel = CountingChannel(weights)

    async def train_round_1() -> None:
        job = LearningJob(7, built.spec, tmp_path / "train.npz", tmp_path / "work")
        with EngineSession(tmp_path / "engine") as engine:
            await job.open(engine, channel, "session", first_round=2)
            try:
                await job.train(channel, "session", 1, 1, False, None)
            finally:
                await job.close()

    with pytest.raises(ValueError, match="round 1 comes before round 2, at which this worker "
                                         "loaded the task"):
        asyncio.run(train_round_1())
    assert channel.uploads == []
