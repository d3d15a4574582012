"""A learning task on a worker: one engine task that loads its data once and trains each round.

The user's task object arrives pickled without its weights; in the engine's subprocess it is
rebuilt around the global weights, its data is split into training and validation parts, and
each round the global weights are streamed into the tensors its `state_dict()` returns before
`train` runs on the device the engine picked; the trained weights stream back from there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from sdk import tensors, values
from sdk.proto import services_pb2 as pb
from sdk.proto import task_pb2
from sdk.secagg import accumulate, fixedpoint
from sdk.weights import METRIC_SLOTS, secure_length
from sdk.wire import CHANNEL_OPTIONS, decode_chunk, encode_chunk, serialize, split_views
from worker.engine import Task


def load_training_data(path: Path) -> Dataset:
    """A worker's training file as a Dataset of (x, y) pairs."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path) as arrays:
            names = ("x", "y") if {"x", "y"} <= set(arrays.files) else ("arr_0", "arr_1")
            if not set(names) <= set(arrays.files):
                raise ValueError(f"{path.name} needs arrays x and y (or arr_0 and arr_1); "
                                 f"it has {arrays.files}")
            return TensorDataset(*(torch.from_numpy(arrays[n]) for n in names))
    if suffix == ".pt":
        loaded = torch.load(path, weights_only=False)  # the data holder's own file
        if isinstance(loaded, Dataset):
            return loaded
        if isinstance(loaded, dict) and {"x", "y"} <= loaded.keys():
            return TensorDataset(loaded["x"], loaded["y"])
        if isinstance(loaded, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in loaded):
            return TensorDataset(*loaded)
        raise ValueError(f"{path.name} holds a {type(loaded).__name__}; save a Dataset, a "
                         "tuple of tensors or a dict with x and y")
    if suffix == ".csv":
        frame = pd.read_csv(path)
        x = torch.from_numpy(frame.iloc[:, :-1].to_numpy(dtype=np.float32))
        target = frame.iloc[:, -1]
        y_dtype = np.int64 if pd.api.types.is_integer_dtype(target) else np.float32
        return TensorDataset(x, torch.from_numpy(target.to_numpy(dtype=y_dtype)))
    raise ValueError(f"{path.name}: training data is read from .npz, .pt or .csv files")


def split(data: Dataset, validate_frac: float, seed: int) -> tuple[Dataset, Dataset | None]:
    """(training part, validation part or None): a seeded random `validate_frac` held out."""
    held_out = int(len(data) * validate_frac)
    if held_out == 0:
        return data, None
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed)).tolist()
    return Subset(data, order[held_out:]), Subset(data, order[:held_out])


class IterationLoader:
    """`iterations` batches in all from `loader`, starting it again as often as needed."""

    def __init__(self, loader: Any, iterations: int) -> None:
        self.loader = loader
        self.iterations = iterations

    def __len__(self) -> int:
        return self.iterations

    def __iter__(self) -> Iterator[Any]:
        served = 0
        while served < self.iterations:
            before = served
            for batch in self.loader:
                yield batch
                served += 1
                if served == self.iterations:
                    return
            if served == before:
                raise ValueError("the training dataloader yields no batch")


def in_manifest_order(state: tensors.StateDict,
                      infos: list[task_pb2.TensorInfo]) -> tensors.StateDict:
    """The tensors the manifest names, in its order; ValueError if one changed shape or dtype."""
    ordered = {}
    for info in infos:
        tensor = state.get(info.name)
        if tensor is None:
            raise ValueError(f"state_dict() no longer has {info.name!r}")
        if not tensors.tensors_match(tensor, info):
            raise ValueError(f"state_dict()[{info.name!r}] is now {tensor.dtype} "
                             f"{list(tensor.shape)}; it was {info.dtype} {list(info.shape)}")
        ordered[info.name] = tensor
    return ordered


def mask_vector(length: int, mask_seeds: list[tuple[bytes, int]],
                stop: threading.Event | None = None) -> np.ndarray:
    """The sum of a round's masks (its self mask and pairwise masks), `length` uint64 words
    (left unfinished once `stop` is set). They do not depend on the weights: a round makes them
    while it downloads and trains, holding 8 B a value meanwhile."""
    vector = np.zeros(length, dtype=np.uint64)
    accumulate(vector, [], mask_seeds, stop=stop)
    return vector


def masked_input(state: tensors.StateDict, infos: list[task_pb2.TensorInfo], samples: int,
                 validate_samples: int, metrics: dict[str, float], precision: int,
                 max_clients: int, masks: np.ndarray) -> np.ndarray:
    """The round's secure-aggregation vector (see sdk.weights) in fixed point, added to
    `masks` (mask_vector's) in place: what the worker sends."""
    if len(metrics) > METRIC_SLOTS:
        raise ValueError(f"validate() returned {len(metrics)} metrics; secure aggregation "
                         f"carries at most {METRIC_SLOTS}")
    start = 0
    with torch.no_grad():
        for info in infos:
            flat = state[info.name].detach().reshape(-1).cpu()
            if flat.dtype == torch.bfloat16:  # numpy has no bfloat16
                flat = flat.float()
            fixedpoint.encode_into(masks[start:start + flat.numel()], flat.numpy(),
                                   samples * 10.0**precision, precision, max_clients, add=True)
            start += flat.numel()
    tail = np.zeros(2 + METRIC_SLOTS)
    tail[:2] = samples, validate_samples
    tail[2:2 + len(metrics)] = [metrics[name] * validate_samples for name in sorted(metrics)]
    fixedpoint.encode_into(masks[start:], tail, 10.0**precision, precision, max_clients, add=True)
    return masks


def _data_chunk(message: bytes) -> memoryview | bytes:
    """A DataChunk's bytes, read without a message object where it has the usual form."""
    chunk = decode_chunk(1, message)
    return chunk if chunk is not None else pb.DataChunk.FromString(message).chunk


class CoordinatorLink:
    """The engine subprocess's own connection to the coordinator: weights stream straight
    between the wire and the model's tensors, with no copy through files or the worker."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        # Chunks are written and read as raw wire bytes, with no message object (sdk.wire).
        service = pb.DESCRIPTOR.services_by_name["WorkerService"].full_name
        self._fetch_weights = self.channel.unary_stream(
            f"/{service}/FetchWeights", request_serializer=serialize,
            response_deserializer=_data_chunk)
        self._upload = self.channel.stream_unary(
            f"/{service}/Upload", request_serializer=serialize,
            response_deserializer=pb.UploadResponse.FromString)

    def download(self, session_id: str, task_id: int, infos: list[task_pb2.TensorInfo],
                 into: tensors.StateDict | None = None) -> tensors.StateDict:
        """The task's global weights: read into `into`'s tensors where they fit, else new ones."""
        in_place = into is not None and tensors.fits(into, infos)
        reader = tensors.StateDictReader(infos, into if in_place else None)
        request = pb.FetchWeightsRequest(session_id=session_id, task_id=task_id)
        with torch.no_grad():
            for chunk in self._fetch_weights(request):
                reader.write(chunk)
            state = reader.result()
            if into is not None and not in_place:
                for info in infos:
                    into[info.name].copy_(state[info.name])
        return state

    def upload(self, session_id: str, exchange_id: int, meta: dict[str, Any],
               chunks: Iterator[memoryview]) -> bool:
        """Sends an answer's `chunks` with `meta` to an exchange; accepted or not."""
        header = pb.UploadHeader(session_id=session_id, exchange_id=exchange_id)
        header.meta.CopyFrom(values.encode(meta))

        def requests() -> Iterator[pb.UploadRequest | bytes]:
            yield pb.UploadRequest(header=header)
            for chunk in chunks:
                yield encode_chunk(2, chunk)  # an UploadRequest's chunk, as wire bytes

        return self._upload(requests()).accepted


class Sent(NamedTuple):
    """A round's upload, kept until the next round in case the coordinator asks for it again:
    its meta, and what makes its chunks (from the trained weights, which stay as they are)."""

    round: int
    meta: dict
    chunks: Callable[[], Iterator[memoryview]]


class LearningProcess(Task):
    """The engine task serving one federated learning task across its rounds.

    It downloads the global weights and uploads its trained weights itself. `round_input` for
    each `train` names the exchange and the round: {"session_id", "exchange_id", "round",
    "validate", "mask_seeds"}, or {"session_id", "exchange_id", "round", "resend": True} to send
    the round's upload again (the coordinator asks when another worker's broken upload had
    reached the sum).
    """

    def __init__(self, task_id: int, spec: task_pb2.TaskSpec, data_path: Path, address: str,
                 session_id: str) -> None:
        super().__init__(task_id)
        self.spec_bytes = spec.SerializeToString()
        self.data_path = data_path
        self.address = address
        self.session_id = session_id

    def load(self) -> None:
        spec = task_pb2.TaskSpec.FromString(self.spec_bytes)
        self.learning = spec.learning
        self.precision, self.max_clients = spec.precision, spec.rules.max_clients
        self.infos = list(spec.learning.weights)
        self.link = CoordinatorLink(self.address)
        state = self.link.download(self.session_id, int(self.task_id), self.infos)
        self.user = tensors.loads_with_weights(spec.learning.task, state)
        self.train_data, self.validate_data = split(
            load_training_data(self.data_path), spec.learning.validate_frac, int(self.task_id))
        self.train_loader = self.user.make_train_dataloader(self.train_data)
        self.validate_loader = (self.user.make_validate_dataloader(self.validate_data)
                                if self.validate_data is not None else None)
        self.sent: Sent | None = None
        self.masking = ThreadPoolExecutor(1, thread_name_prefix="masks")

    def train(self, device: str) -> dict:
        request = self.round_input
        if request.get("resend"):
            if self.sent is None or self.sent.round != request["round"]:
                raise ValueError(f"it has no upload of round {request['round']} to send again")
            return {"accepted": self._upload(request, self.sent.meta, self.sent.chunks())}
        self.sent = None
        if not len(self.train_data):
            raise ValueError(f"it has no training samples: {self.data_path.name} holds "
                             f"{len(self.train_data) + len(self.validate_data or [])} rows "
                             "after validate_frac is held out")
        seeds = request["mask_seeds"]
        if seeds is not None:  # made on the side while the weights download and train
            stop = threading.Event()
            making = self.masking.submit(mask_vector, secure_length(self.infos), seeds, stop)
        try:
            trained, metrics = self._train_round(device, request)
        except BaseException:
            if seeds is not None:
                stop.set()  # nobody will send them: no CPU spent on them after this
            raise
        samples = len(self.train_data)
        validated = len(self.validate_data) if metrics else 0
        if seeds is None:
            meta = {"samples": samples, "validate_samples": validated, "metrics": metrics}
            self.sent = Sent(request["round"], meta, lambda: tensors.iter_chunks(trained))
            chunks = self.sent.chunks()
        else:  # only the sum of every worker's vector can be read
            def masked_chunks(masks: np.ndarray | None = None) -> Iterator[memoryview]:
                """On the masks made meanwhile; for a resend, all made again (8 B a value are
                not kept between rounds)."""
                if masks is None:
                    masks = mask_vector(secure_length(self.infos), seeds)
                vector = masked_input(trained, self.infos, samples, validated, metrics,
                                      self.precision, self.max_clients, masks)
                return split_views(vector.astype("<u8", copy=False))
            self.sent = Sent(request["round"], {"metric_names": sorted(metrics)}, masked_chunks)
            chunks = masked_chunks(making.result())
        return {"accepted": self._upload(request, self.sent.meta, chunks)}

    def _train_round(self, device: str, request: dict) -> tuple[tensors.StateDict,
                                                                dict[str, float]]:
        """Downloads the global weights into the model, trains, validates when asked: the
        trained weights in manifest order, and the metrics."""
        self.user.device = device
        state = self.user.state_dict()
        missing = {info.name for info in self.infos} - state.keys()
        if missing:
            raise KeyError(f"state_dict() no longer has {sorted(missing)}")
        self.link.download(request["session_id"], int(self.task_id), self.infos, into=state)
        if self.learning.merge_iteration:
            self.user.train(IterationLoader(self.train_loader, self.learning.merge_iteration))
        else:
            for _ in range(self.learning.merge_epoch):
                self.user.train(self.train_loader)
        metrics: dict[str, float] = {}
        if request["validate"] and self.validate_loader is not None:
            metrics = {k: float(v) for k, v in self.user.validate(self.validate_loader).items()}
        return in_manifest_order(self.user.state_dict(), self.infos), metrics

    def _upload(self, request: dict, meta: dict, chunks: Iterator[memoryview]) -> bool:
        return self.link.upload(request["session_id"], request["exchange_id"], meta, chunks)
