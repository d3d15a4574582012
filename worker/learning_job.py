"""A learning task on the worker daemon's side: every exchange with the coordinator, and the
masking, for the engine task that trains it.

The engine task runs the submitter's code, so it gets no network, no session and no key: the
daemon downloads the global weights into a shared-memory region of the model's size (the
tensors' raw bytes in manifest order), the engine task trains from there and writes its trained
weights back there, and the daemon uploads them, or under secure aggregation their fixed-point
encoding added onto the round's masks. No torch here: the daemon stays light.

Under DP-FedAvg (sdk.privacy.fedavg) the daemon keeps its own copy of the global weights as it
downloads them, and releases only what it makes from them and from one snapshot of the trained
weights: the update clipped, with its share of the noise, in fixed point; integer tensors keep
the global value; no sample count (each worker weighs 1) and no metrics (the submitter's numbers,
with no bound). The engine task, which runs the submitter's code, cannot skip it.
"""

from __future__ import annotations

import asyncio
import hashlib
import mmap
import os
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import numpy as np

from sdk import values
from sdk.privacy.accounting import Cost, fewest_honest
from sdk.privacy.fedavg import DPFedAvg
from sdk.proto import services_pb2 as pb
from sdk.proto import task_pb2
from sdk.secagg import Rule, accumulate, fixedpoint
from sdk.weights import (
    FLOATS,
    METRIC_SLOTS,
    TAIL,
    bfloat16_to_float32,
    count,
    float32_to_bfloat16,
    nbytes,
    secure_bits,
    secure_length,
    total_bytes,
)
from sdk.wire import decode_chunk, encode_chunk, serialize, split_views
from worker.engine import EngineSession, TaskHandle, warm_template
from worker.engine.confine import TaskUser, give, readable_copy
from worker.learning_process import LearningProcess

SHM_DIR = Path("/dev/shm")

# How each dtype's little-endian bytes read as numbers (bfloat16 apart: numpy has none).
NUMPY_DTYPES = {
    "float32": "<f4", "float16": "<f2", "float64": "<f8", "int64": "<i8", "int32": "<i4",
    "int16": "<i2", "int8": "i1", "uint8": "u1", "bool": "?",
}
BFLOAT16_PIECE = 1 << 20  # values widened to float32 at a time


# What a learning task's process runs: the engine task, its runtime (torch), the classes a
# task's code derives from, and what torch imports at an optimizer's first call (seconds).
LEARNING_RUNTIME = ("worker.learning_process", "worker.learning", "sdk.task", "torch._dynamo")


def warm_engine() -> None:
    """Starts the engine's template with the learning runtime imported, unless it runs:
    learning tasks' processes then import nothing of it when they start or first train."""
    warm_template(LEARNING_RUNTIME)


class WeightsMismatch(Exception):
    """The initial weights are not those the task's submitter signed."""


class SharedWeights:
    """A model's bytes in a file mapped into memory, shared with the engine task that maps the
    same file: under /dev/shm (else `fallback_dir`), created 0600, its space reserved up front
    so that a full tmpfs fails here rather than with SIGBUS on a write."""

    def __init__(self, size: int, fallback_dir: Path, prefix: str) -> None:
        self.size = size
        for directory in (SHM_DIR, fallback_dir):
            try:
                directory.mkdir(parents=True, exist_ok=True)
                fd, name = tempfile.mkstemp(prefix=prefix, dir=directory)  # mode 0600
            except OSError:
                continue
            try:
                os.posix_fallocate(fd, 0, max(size, 1))  # mmap refuses length 0
                self.path: Path | None = Path(name)
                self._map = mmap.mmap(fd, max(size, 1))
                break
            except OSError:
                os.unlink(name)
            finally:
                os.close(fd)
        else:
            raise OSError(f"no room for {size} bytes of weights in {SHM_DIR} or {fallback_dir}")
        self.view = memoryview(self._map)[:size]

    def unlink(self) -> None:
        """Removes the file; the mappings stay valid for whoever holds them."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None

    def close(self) -> None:
        self.unlink()
        self.view.release()
        try:
            self._map.close()
        except BufferError:
            pass  # a view of it is still alive (an upload being torn down): unmapped with it


def make_masks(out: np.ndarray, mask_seeds: list[tuple[bytes, int]],
               stop: threading.Event | None = None) -> np.ndarray:
    """The sum of a round's masks (its self mask and pairwise masks) written over `out`, words
    of uint64 or uint32 (left unfinished once `stop` is set). They do not depend on the
    weights: a round makes them while it downloads and trains, in memory kept from round to
    round (fresh memory is slow to fault in)."""
    out.fill(0)
    accumulate(out, [], mask_seeds, stop=stop)
    return out


def _numbers(raw: memoryview, dtype: str, start: int, stop: int) -> np.ndarray:
    """Values `start` to `stop` of a tensor's raw bytes, as numpy reads them (bfloat16 widened
    to float32: a bfloat16 is a float32's upper half)."""
    if dtype == "bfloat16":
        return bfloat16_to_float32(np.frombuffer(raw, dtype="<u2")[start:stop])
    return np.frombuffer(raw, dtype=NUMPY_DTYPES[dtype])[start:stop]


def _encode_tensor(out: np.ndarray, raw: memoryview, dtype: str, scale: float, precision: int,
                   max_clients: int, base: memoryview | None = None) -> None:
    """One tensor's raw little-endian bytes (minus those of `base`, where given), times
    `scale`, in fixed point added onto `out`."""
    piece = BFLOAT16_PIECE if dtype == "bfloat16" else max(out.size, 1)
    for start in range(0, out.size, piece):
        stop = min(start + piece, out.size)
        fixedpoint.encode_into(
            out[start:stop], _numbers(raw, dtype, start, stop), scale, precision, max_clients,
            add=True, minus=None if base is None else _numbers(base, dtype, start, stop))


def masked_input(raw: memoryview, infos: list[task_pb2.TensorInfo], samples: int,
                 validate_samples: int, metrics: dict[str, float], precision: int,
                 max_clients: int, masks: np.ndarray,
                 global_raw: memoryview | None = None) -> np.ndarray:
    """The round's secure-aggregation vector (see sdk.weights) in fixed point, from the trained
    weights' raw bytes `raw`, added to `masks` (make_masks') in place: what the worker sends.
    In 32-bit words (uint32 `masks`) the update from `global_raw`, the round's global weights."""
    if len(metrics) > METRIC_SLOTS:
        raise ValueError(f"validate() returned {len(metrics)} metrics; secure aggregation "
                         f"carries at most {METRIC_SLOTS}")
    word = offset = 0
    for info in infos:
        size, values_count = nbytes(info), count(info)
        try:
            _encode_tensor(masks[word:word + values_count], raw[offset:offset + size],
                           info.dtype, samples * 10.0**precision, precision, max_clients,
                           None if masks.dtype == np.uint64 else global_raw[offset:offset + size])
        except fixedpoint.FixedPointOverflow as error:
            what = ("its update times this worker's training samples is beyond the task's "
                    "update_bound" if masks.dtype == np.uint32 else "its weight times this "
                    "worker's training samples is too large")
            raise fixedpoint.FixedPointOverflow(
                f"tensor {info.name!r}: {what}: {error}", error.index) from None
        word, offset = word + values_count, offset + size
    tail = np.zeros(TAIL)
    tail[:2] = samples, validate_samples
    tail[2:2 + len(metrics)] = [metrics[name] * validate_samples for name in sorted(metrics)]
    if masks.dtype == np.uint64:
        fixedpoint.encode_into(masks[word:], tail, 10.0**precision, precision, max_clients,
                               add=True)
    else:
        masks[word:] += fixedpoint.encode_wide(tail, precision, max_clients, bits=32)
    return masks


def read_floats(raw: memoryview | bytes, infos: list[task_pb2.TensorInfo]) -> np.ndarray:
    """The floating-point tensors' values in `raw` (a model's bytes in manifest order), as one
    float64 vector."""
    parts, offset = [], 0
    for info in infos:
        if info.dtype in FLOATS:
            piece = raw[offset:offset + nbytes(info)]
            parts.append(bfloat16_to_float32(np.frombuffer(piece, "<u2"))
                         if info.dtype == "bfloat16" else
                         np.frombuffer(piece, NUMPY_DTYPES[info.dtype]))
        offset += nbytes(info)
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)


def dp_masked_input(release: np.ndarray, global_raw: bytes, infos: list[task_pb2.TensorInfo],
                    precision: int, max_clients: int, masks: np.ndarray) -> np.ndarray:
    """DP-FedAvg's secure-aggregation vector added onto `masks` in place: the floating-point
    values of `release` (DPFedAvg.release's), the other tensors' global values, one sample and
    no metrics."""
    word = offset = used = 0
    for info in infos:
        size, values_count = nbytes(info), count(info)
        target = masks[word:word + values_count]
        if info.dtype in FLOATS:
            fixedpoint.add_integers(target, release[used:used + values_count], precision,
                                    max_clients)
            used += values_count
        else:
            _encode_tensor(target, memoryview(global_raw)[offset:offset + size], info.dtype,
                           10.0**precision, precision, max_clients)
        word, offset = word + values_count, offset + size
    tail = np.zeros(2 + METRIC_SLOTS)
    tail[0] = 1  # each worker weighs one sample
    fixedpoint.encode_into(masks[word:], tail, 10.0**precision, precision, max_clients, add=True)
    return masks


def dp_weights(release: np.ndarray, global_raw: bytes, infos: list[task_pb2.TensorInfo],
               precision: int) -> bytes:
    """DP-FedAvg's upload without secure aggregation: the model's raw bytes, its floating-point
    values those of `release` decoded from fixed point, the other tensors' the global ones."""
    out, offset, used = bytearray(len(global_raw)), 0, 0
    for info in infos:
        size, values_count = nbytes(info), count(info)
        if info.dtype in FLOATS:
            decoded = release[used:used + values_count] / 10.0**precision
            out[offset:offset + size] = (
                float32_to_bfloat16(decoded) if info.dtype == "bfloat16"
                else decoded.astype(NUMPY_DTYPES[info.dtype])).tobytes()
            used += values_count
        else:
            out[offset:offset + size] = global_raw[offset:offset + size]
        offset += size
    return bytes(out)


def _data_chunk(message: bytes) -> memoryview | bytes:
    """A DataChunk's bytes, read without a message object where it has the usual form."""
    chunk = decode_chunk(1, message)
    return chunk if chunk is not None else pb.DataChunk.FromString(message).chunk


def _method(name: str) -> str:
    return f"/{pb.DESCRIPTOR.services_by_name['WorkerService'].full_name}/{name}"


class Sent(NamedTuple):
    """A round's answer, kept until the next round in case the coordinator asks for it again:
    the weights stay in shared memory until the next download; masks are made again."""

    round: int
    meta: dict[str, Any]
    result: dict[str, Any]  # what the engine task's train returned
    mask_seeds: list[tuple[bytes, int]] | None
    release: np.ndarray | None = None  # DP-FedAvg: the noised values, sent again unchanged


class LearningJob:
    """A joined learning task: its shared weights, the engine task that trains on them, and
    every exchange of weights with the coordinator (over the daemon's channel, given per call
    since the daemon reconnects)."""

    def __init__(self, task_id: int, spec: task_pb2.TaskSpec, data_path: Path,
                 work_dir: Path) -> None:
        self.task_id = task_id
        self.spec = spec
        self.data_path = data_path
        self.secagg = Rule.of(spec)  # the signed threshold and SecAgg+ size
        self.max_rounds = spec.learning.max_rounds
        self.max_clients = spec.rules.max_clients
        self.precision = spec.precision
        self.secure = spec.secure_aggregation
        self.infos = list(spec.learning.weights)
        self.dp = DPFedAvg.from_spec(spec)  # PrivacyRefused if the spec's DP is malformed
        self.bits = secure_bits(spec)  # of the secure-aggregation vector's words
        self.task_dir = work_dir / str(task_id)  # the engine task's work dir
        self.weights = SharedWeights(total_bytes(self.infos), self.task_dir, f"task-{task_id}-")
        # DP-FedAvg, and updates in 32-bit words: the global weights as downloaded, out of the
        # engine task's reach
        self._global = (bytearray(total_bytes(self.infos))
                        if self.dp is not None or (self.secure and self.bits == 32) else None)
        self._masks: np.ndarray | None = None  # the masked vector's memory, kept between rounds
        self.data_copy: Path | None = None  # the task user's copy of the dataset, if any
        self.initial_sha256 = b""  # of the initial weights, once downloaded
        self.handle: TaskHandle | None = None
        self._initial = False  # the shared weights are the initial ones, untrained yet
        self.first_round = 1  # the round whose global weights `open` loaded
        self._sent: Sent | None = None
        self._lock = asyncio.Lock()  # one round's exchange at a time over the shared weights
        self._masking = ThreadPoolExecutor(1, thread_name_prefix=f"masks-{task_id}")

    async def open(self, engine: EngineSession, channel: grpc.aio.Channel, session_id: str,
                   expected_weights_sha256: bytes | None = None, first_round: int = 1) -> None:
        """Downloads the global weights (the initial ones, or a resumed task's checkpoint),
        checks them against the digest their submitter signed (when given), then starts and
        loads the engine task on them; round 1 trains them as they are, without downloading
        them again. Closes the job if any of it fails."""
        try:
            digest = hashlib.sha256()
            await self._download(channel, session_id, digest, copy=self._global)
            self.initial_sha256 = digest.digest()
            if (expected_weights_sha256 is not None
                    and self.initial_sha256 != expected_weights_sha256):
                raise WeightsMismatch("the initial weights do not match the digest its "
                                      "submitter signed; the coordinator sent other weights "
                                      "than the task was built with")
            data_path = await asyncio.to_thread(self._give_to, engine.task_user)
            process = LearningProcess(self.task_id, self.spec, data_path,
                                      str(self._as_task_sees(self.weights.path)))
            self.handle = await engine.open_async(process)
            self.weights.unlink()  # both sides have it mapped: nothing left behind on a crash
            self._initial = first_round == 1
            self.first_round = first_round
        except BaseException:
            await self.close()
            raise

    def describe(self) -> str:
        task = self.handle.task
        packages = sorted({name.partition(".")[0] for name in task.imported or ()})
        text = f"engine task loaded, pid {task.pid}, " + (
            "started without a warm template" if task.imported is None else
            "forked from the warm template" + (f" (it imported modules of {', '.join(packages)})"
                                               if packages else ""))
        if self.dp is None:
            return text
        noise = ("its share of the noise under secure aggregation" if self.secure else
                 "the whole noise, without secure aggregation (it costs accuracy)")
        return (f"{text}; DP-FedAvg: the update clipped to L2 norm {self.dp.clip_norm:g} with "
                f"{noise}, noise multiplier {self.dp.noise_multiplier:g}; no metrics released")

    @property
    def delta(self) -> float | None:
        """The delta this task's epsilon is reported at (None without DP-FedAvg)."""
        return self.dp.delta if self.dp is not None else None

    def privacy_cost(self, round_number: int) -> Cost | None:
        """What round `round_number` costs this holder (every round costs the same), or None
        without DP-FedAvg."""
        if self.dp is None:
            return None
        if not 1 <= round_number <= self.max_rounds:
            raise ValueError(f"task {self.task_id} has rounds 1 to {self.max_rounds}, "
                             f"not {round_number}")
        return self.dp.round_cost()

    def total_privacy_cost(self) -> Cost | None:
        """What all max_rounds rounds cost this holder, or None without DP-FedAvg."""
        return self.dp.round_cost().times(self.max_rounds) if self.dp is not None else None

    async def train(self, channel: grpc.aio.Channel, session_id: str, exchange_id: int,
                    round_number: int, validate: bool,
                    mask_seeds: list[tuple[bytes, int]] | None,
                    selected: int | None = None) -> bool:
        """A round: downloads the global weights, trains them in the engine task and uploads
        the answer to the exchange: the trained weights, or under secure aggregation (with
        `mask_seeds`, and the number of workers `selected` for the round) their masked input,
        whose masks are made meanwhile. Under DP-FedAvg, the update clipped and noised
        instead. Accepted or not."""
        if round_number < self.first_round:  # round 1's weights are those the submitter signed
            raise ValueError(f"round {round_number} comes before round {self.first_round}, at "
                             "which this worker loaded the task and its weights")
        async with self._lock:
            self._sent = None
            stop = threading.Event()
            making = None
            if mask_seeds is not None:
                making = asyncio.get_running_loop().run_in_executor(
                    self._masking, make_masks, self._mask_memory(), mask_seeds, stop)
            try:
                if not (self._initial and round_number == 1):  # round 1's are the initial
                    await self._download(channel, session_id, copy=self._global)
                self._initial = False
                result = await self.handle.train_async({
                    "round": round_number, "validate": validate and self.dp is None})
                masks = await making if making is not None else None
            except BaseException:
                stop.set()  # nobody will send the masks: no CPU spent on them after this
                raise
            release = None
            if self.dp is not None:
                shares = (fewest_honest(self.secagg, selected)
                          if mask_seeds else 1)
                release = await asyncio.to_thread(self._dp_release, shares)
                result = {"samples": 1, "validate_samples": 0, "metrics": {}}
            if mask_seeds is None:
                meta = {key: result[key] for key in ("samples", "validate_samples", "metrics")}
            else:
                meta = {"metric_names": sorted(result["metrics"])}
            self._sent = Sent(round_number, meta, result, mask_seeds, release)
            return await self._upload(channel, session_id, exchange_id, masks)

    def _dp_release(self, shares: int) -> np.ndarray:
        """DP-FedAvg: the update from one snapshot of the trained weights (the engine task may
        write them still) and the daemon's own copy of the global ones, clipped and noised."""
        trained = read_floats(bytes(self.weights.view), self.infos)
        return self.dp.release(read_floats(self._global, self.infos), trained, shares)

    async def resend(self, channel: grpc.aio.Channel, session_id: str, exchange_id: int,
                     round_number: int) -> bool:
        """Uploads the round's answer again, unchanged (the coordinator asks when another
        worker's broken upload had reached the sum). Accepted or not."""
        async with self._lock:
            if self._sent is None or self._sent.round != round_number:
                raise ValueError(f"it has no upload of round {round_number} to send again")
            return await self._upload(channel, session_id, exchange_id)

    async def close(self) -> None:
        if self.handle is not None:
            await self.handle.close_async()
        self._masking.shutdown(wait=False, cancel_futures=True)
        self.weights.close()
        if self.data_copy is not None:
            self.data_copy.unlink(missing_ok=True)

    def _give_to(self, user: TaskUser | None) -> Path:
        """Hands the weights and the dataset to the task user: the weights file becomes its,
        and it reads a copy of the dataset in its work dir (the daemon's data dir is closed to
        it; the copy costs the dataset's size on disk and the time to write it). The dataset's
        path as the engine task reaches it."""
        if user is None:
            return self.data_path
        give(self.weights.path, user)
        self.data_copy = self.task_dir / self.data_path.name
        self.task_dir.mkdir(parents=True, exist_ok=True)
        readable_copy(self.data_path, self.data_copy, user)
        return self._as_task_sees(self.data_copy)

    def _as_task_sees(self, path: Path) -> Path:
        """`path` relative to the task's work dir (its cwd) when it is in there: the
        directories above may be closed to the task user."""
        return path.relative_to(self.task_dir) if path.is_relative_to(self.task_dir) else path

    async def _download(self, channel: grpc.aio.Channel, session_id: str,
                        digest: Any = None, copy: bytearray | None = None) -> None:
        """The task's global weights into shared memory, as raw chunks (and into `copy`, as
        they come); `digest` (a hashlib object) updated with them."""
        fetch = channel.unary_stream(_method("FetchWeights"), request_serializer=serialize,
                                     response_deserializer=_data_chunk)
        view, offset = self.weights.view, 0
        async for chunk in fetch(pb.FetchWeightsRequest(session_id=session_id,
                                                        task_id=self.task_id)):
            end = offset + len(chunk)
            if end > len(view):
                raise ValueError(f"the coordinator sent more than the {len(view)} bytes of "
                                 f"task {self.task_id}'s weights")
            view[offset:end] = chunk
            if copy is not None:
                copy[offset:end] = chunk
            if digest is not None:
                digest.update(chunk)
            offset = end
            # Chunks gRPC already holds come without a pause: let the heartbeats out between.
            await asyncio.sleep(0)
        if offset != len(view):
            raise ValueError(f"the coordinator sent {offset} of the {len(view)} bytes of "
                             f"task {self.task_id}'s weights")

    async def _upload(self, channel: grpc.aio.Channel, session_id: str, exchange_id: int,
                      masks: np.ndarray | None = None) -> bool:
        """Sends the kept answer: the weights straight from shared memory, or their masked
        input on `masks` (made again from the seeds when not given)."""
        sent = self._sent
        if sent.mask_seeds is None and sent.release is not None:
            plain = await asyncio.to_thread(dp_weights, sent.release, bytes(self._global),
                                            self.infos, self.precision)
            chunks: Iterator[memoryview] = split_views(memoryview(plain))
        elif sent.mask_seeds is None:
            chunks = split_views(self.weights.view)
        else:
            vector = await asyncio.to_thread(self._masked, sent, masks)
            chunks = split_views(vector.astype(vector.dtype.newbyteorder("<"), copy=False))
        header = pb.UploadHeader(session_id=session_id, exchange_id=exchange_id)
        header.meta.CopyFrom(values.encode(sent.meta))

        def requests() -> Iterator[pb.UploadRequest | bytes]:
            yield pb.UploadRequest(header=header)
            for chunk in chunks:
                yield encode_chunk(2, chunk)  # an UploadRequest's chunk, as wire bytes

        upload = channel.stream_unary(_method("Upload"), request_serializer=serialize,
                                      response_deserializer=pb.UploadResponse.FromString)
        return (await upload(requests())).accepted

    def _mask_memory(self) -> np.ndarray:
        if self._masks is None:
            self._masks = np.empty(secure_length(self.infos, self.bits),
                                   dtype=fixedpoint.WORDS[self.bits])
        return self._masks

    def _masked(self, sent: Sent, masks: np.ndarray | None) -> np.ndarray:
        if masks is None:  # a resend: the masked vector sent was not kept
            masks = make_masks(self._mask_memory(), sent.mask_seeds)
        if sent.release is not None:
            return dp_masked_input(sent.release, bytes(self._global), self.infos,
                                   self.precision, self.max_clients, masks)
        result = sent.result
        return masked_input(self.weights.view, self.infos, result["samples"],
                            result["validate_samples"], result["metrics"], self.precision,
                            self.max_clients, masks,
                            None if self._global is None else memoryview(self._global))
