"""A learning task on a worker: one engine task that loads its data once and trains each round.

The user's task object arrives pickled without its weights; in the engine's subprocess it is
rebuilt around the initial weights, its data is split into training and validation parts, and
each round the global weights are copied into the tensors its `state_dict()` returns before
`train` runs on the device the engine picked.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from sdk import tensors
from sdk.proto import task_pb2
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


def copy_weights(path: Path, state: tensors.StateDict, infos: list[task_pb2.TensorInfo]) -> None:
    """Copies the weights stored in `path` into the tensors of `state`, in place."""
    incoming = tensors.read_file(path, infos)
    missing = incoming.keys() - state.keys()
    if missing:
        raise KeyError(f"state_dict() no longer has {sorted(missing)}")
    with torch.no_grad():
        for name, tensor in incoming.items():
            state[name].copy_(tensor)


def in_manifest_order(state: tensors.StateDict,
                      infos: list[task_pb2.TensorInfo]) -> tensors.StateDict:
    """The tensors the manifest names, in its order; ValueError if one changed shape or dtype."""
    ordered = {}
    for info in infos:
        tensor = state.get(info.name)
        if tensor is None:
            raise ValueError(f"state_dict() no longer has {info.name!r}")
        if tensors.manifest({info.name: tensor})[0] != info:
            raise ValueError(f"state_dict()[{info.name!r}] is now {tensor.dtype} "
                             f"{list(tensor.shape)}; it was {info.dtype} {list(info.shape)}")
        ordered[info.name] = tensor
    return ordered


class LearningProcess(Task):
    """The engine task serving one federated learning task across its rounds.

    `round_input` for each `train`: {"weights": path of the global weights, "out": path for
    this worker's trained weights, "validate": whether to validate this round}.
    """

    def __init__(self, task_id: int, spec: task_pb2.TaskSpec, data_path: Path,
                 initial_weights: Path) -> None:
        super().__init__(task_id)
        self.spec_bytes = spec.SerializeToString()
        self.data_path = data_path
        self.initial_weights = initial_weights

    def load(self) -> None:
        spec = task_pb2.TaskSpec.FromString(self.spec_bytes)
        self.learning = spec.learning
        self.infos = list(spec.learning.weights)
        state = tensors.read_file(self.initial_weights, self.infos)
        self.user = tensors.loads_with_weights(spec.learning.task, state)
        self.train_data, self.validate_data = split(
            load_training_data(self.data_path), spec.learning.validate_frac, int(self.task_id))
        self.train_loader = self.user.make_train_dataloader(self.train_data)
        self.validate_loader = (self.user.make_validate_dataloader(self.validate_data)
                                if self.validate_data is not None else None)

    def train(self, device: str) -> dict:
        request = self.round_input
        self.user.device = device
        copy_weights(Path(request["weights"]), self.user.state_dict(), self.infos)
        if self.learning.merge_iteration:
            self.user.train(IterationLoader(self.train_loader, self.learning.merge_iteration))
        else:
            for _ in range(self.learning.merge_epoch):
                self.user.train(self.train_loader)
        metrics: dict[str, float] = {}
        if request["validate"] and self.validate_loader is not None:
            metrics = {k: float(v) for k, v in self.user.validate(self.validate_loader).items()}
        tensors.write_file(Path(request["out"]), in_manifest_order(self.user.state_dict(), self.infos))
        return {
            "samples": len(self.train_data),
            "validate_samples": len(self.validate_data) if metrics else 0,
            "metrics": metrics,
        }
