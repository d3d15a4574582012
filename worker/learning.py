"""A learning task's runtime, in the engine task that serves it (worker.learning_process): it
loads its data once and trains each round.

The user's task object arrives pickled without its weights; in the engine's subprocess it is
rebuilt around tensors over the shared memory into which the worker daemon downloads the
global weights (see worker.learning_job), its data is split into training and validation
parts, and each round the global weights are copied into the tensors its `state_dict()` returns
(unless they are that memory already) before `train` runs on the device the engine picked; the
trained weights are copied back there. The subprocess has no network, session or key. The
engine's template imports this module (and torch) once, before it forks task processes.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from sdk import tensors
from sdk.proto import task_pb2
from sdk.weights import count, nbytes, total_bytes


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
    """(training part, validation part or None): the rows at the first int(len × validate_frac)
    places of a permutation seeded with `seed` (the task id) are held out (README.md's rule)."""
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


def map_weights(path: str, infos: list[task_pb2.TensorInfo]) -> tensors.StateDict:
    """The manifest's tensors over the shared-memory file at `path` (the daemon's), in manifest
    order: writing into them writes there."""
    with open(path, "r+b") as handle:
        region = mmap.mmap(handle.fileno(), max(total_bytes(infos), 1))
    state, offset = {}, 0
    for info in infos:
        dtype, shape = tensors.DTYPES[info.dtype], tuple(info.shape)
        values = count(info)
        state[info.name] = (torch.frombuffer(region, dtype=dtype, count=values, offset=offset)
                            .view(shape) if values else torch.empty(shape, dtype=dtype))
        offset += nbytes(info)
    return state  # the tensors keep the mapping alive


def copy_unaliased(targets: tensors.StateDict, sources: tensors.StateDict) -> None:
    """Copies each of `sources` into the tensor of `targets` of its name, unless both are the
    same memory already."""
    with torch.no_grad():
        for name, source in sources.items():
            target = targets[name]
            if not (target.device == source.device and target.data_ptr() == source.data_ptr()):
                target.copy_(source)


class Learner:
    """One federated learning task's state across its rounds, in its engine task.

    It has no network: its weights are in a shared-memory file the worker daemon made
    (`weights_path`), which holds the global weights when a round starts and must hold the
    trained ones when it ends. Its paths are absolute or relative to its work dir: run as a
    task user, it may reach nothing above that dir (see worker.engine.confine).
    """

    def __init__(self, task_id: int, spec_bytes: bytes, data_path: Path,
                 weights_path: str) -> None:
        spec = task_pb2.TaskSpec.FromString(spec_bytes)
        self.data_path = data_path
        self.learning = spec.learning
        self.infos = list(spec.learning.weights)
        self.shared = map_weights(weights_path, self.infos)
        self.user = tensors.loads_with_weights(spec.learning.task, self.shared)
        self.train_data, self.validate_data = split(
            load_training_data(data_path), spec.learning.validate_frac, task_id)
        self.train_loader = self.user.make_train_dataloader(self.train_data)
        self.validate_loader = (self.user.make_validate_dataloader(self.validate_data)
                                if self.validate_data is not None else None)

    def train(self, device: str, validate: bool) -> dict:
        """Trains the global weights on `device` and leaves the trained ones in shared memory;
        {"samples", "validate_samples", "metrics"}, metrics only when `validate`."""
        if not len(self.train_data):
            raise ValueError(f"it has no training samples: {self.data_path.name} holds "
                             f"{len(self.train_data) + len(self.validate_data or [])} rows "
                             "after validate_frac is held out")
        self.user.device = device
        copy_unaliased(in_manifest_order(self.user.state_dict(), self.infos), self.shared)
        if self.learning.merge_iteration:
            self.user.train(IterationLoader(self.train_loader, self.learning.merge_iteration))
        else:
            for _ in range(self.learning.merge_epoch):
                self.user.train(self.train_loader)
        metrics: dict[str, float] = {}
        if validate and self.validate_loader is not None:
            metrics = {k: float(v) for k, v in self.user.validate(self.validate_loader).items()}
        copy_unaliased(self.shared, in_manifest_order(self.user.state_dict(), self.infos))
        return {"samples": len(self.train_data),
                "validate_samples": len(self.validate_data) if metrics else 0,
                "metrics": metrics}
