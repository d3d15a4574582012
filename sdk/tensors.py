"""State dicts as data: a manifest of (name, dtype, shape) and each tensor's raw bytes.

On the wire and on disk a state dict is the concatenation of its tensors' little-endian bytes in
manifest order; nothing is pickled. A learning task's code is pickled without its weights: each
tensor of its `state_dict()` is written as a reference into those bytes instead.
"""

from __future__ import annotations

import io
import pickle
import site
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

import cloudpickle
import torch

from sdk.proto import task_pb2

from sdk.weights import ITEMSIZES
from sdk.wire import CHUNK_SIZE, split_views

DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in ITEMSIZES}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}

StateDict = dict[str, torch.Tensor]


def manifest(state: StateDict) -> list[task_pb2.TensorInfo]:
    """The manifest of a state dict; ValueError for anything that is not a supported tensor."""
    infos = []
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"state_dict()[{name!r}] is a {type(tensor).__name__}, not a tensor")
        if tensor.dtype not in _NAMES:
            raise ValueError(f"state_dict()[{name!r}] has dtype {tensor.dtype}, which cannot "
                             f"travel; supported: {', '.join(DTYPES)}")
        infos.append(task_pb2.TensorInfo(name=name, dtype=_NAMES[tensor.dtype],
                                         shape=list(tensor.shape)))
    return infos


def raw_bytes(tensor: torch.Tensor) -> memoryview:
    """A tensor's bytes, little-endian, row-major (a view where it already is one)."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()).cast("B")


def iter_chunks(state: StateDict, chunk_size: int = CHUNK_SIZE) -> Iterator[memoryview]:
    """The state dict's bytes in manifest order, in views of at most `chunk_size` (no copy:
    they hold while the tensors stay as they are)."""
    for tensor in state.values():
        yield from split_views(raw_bytes(tensor), chunk_size)


def write_file(path: Path, state: StateDict) -> None:
    with open(path, "wb") as handle:
        for tensor in state.values():
            handle.write(raw_bytes(tensor))


class StateDictReader:
    """Fills freshly allocated tensors from the bytes of a state dict, piece by piece."""

    def __init__(self, infos: list[task_pb2.TensorInfo]) -> None:
        self.state: StateDict = {
            info.name: torch.empty(tuple(info.shape), dtype=DTYPES[info.dtype]) for info in infos
        }
        self._views = [raw_bytes(t) for t in self.state.values()]  # writable: they share memory
        self._index = 0
        self._offset = 0

    def write(self, data: bytes | memoryview) -> None:
        data = memoryview(data)
        while data:
            if self._index == len(self._views):
                raise ValueError("more bytes than the manifest's tensors hold")
            target = self._views[self._index]
            take = min(len(data), len(target) - self._offset)
            target[self._offset:self._offset + take] = data[:take]
            data = data[take:]
            self._offset += take
            if self._offset == len(target):
                self._index, self._offset = self._index + 1, 0
        self._skip_empty()

    def result(self) -> StateDict:
        self._skip_empty()
        if self._index != len(self._views):
            raise ValueError("the weights ended before the manifest's last tensor")
        return self.state

    def _skip_empty(self) -> None:
        while self._index < len(self._views) and len(self._views[self._index]) == 0:
            self._index += 1


def tensors_match(tensor: torch.Tensor, info: task_pb2.TensorInfo) -> bool:
    return _NAMES.get(tensor.dtype) == info.dtype and list(tensor.shape) == list(info.shape)


def read_file(path: Path, infos: list[task_pb2.TensorInfo]) -> StateDict:
    reader = StateDictReader(infos)
    with open(path, "rb") as handle:
        while piece := handle.read(CHUNK_SIZE):
            reader.write(piece)
    return reader.result()


# Task code without its weights ----------------------------------------------------------------

def _key(tensor: torch.Tensor) -> tuple[Any, ...]:
    return (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tensor.stride(),
            tensor.device.type)


class _Pickler(cloudpickle.Pickler):
    def __init__(self, file: BinaryIO, state: StateDict) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._names = {}
        for name, tensor in state.items():
            self._names.setdefault(_key(tensor), name)
        self.referenced: set[str] = set()

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, torch.Tensor) and obj.numel() and _key(obj) in self._names:
            name = self._names[_key(obj)]
            self.referenced.add(name)
            return ("weights", name, isinstance(obj, torch.nn.Parameter), obj.requires_grad)
        return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, state: StateDict) -> None:
        super().__init__(file)
        self._state = state
        self._made: dict[tuple[str, bool], torch.Tensor] = {}

    def persistent_load(self, pid: Any) -> Any:
        kind, name, is_parameter, requires_grad = pid
        if kind != "weights" or name not in self._state:
            raise pickle.UnpicklingError(f"unknown reference {pid!r} in the task's code")
        key = (name, is_parameter)
        if key not in self._made:
            tensor = self._state[name]
            self._made[key] = (torch.nn.Parameter(tensor, requires_grad=requires_grad)
                               if is_parameter else tensor.requires_grad_(requires_grad))
        return self._made[key]


def dumps_without_weights(obj: Any, state: StateDict) -> bytes:
    """`obj` pickled by value (cloudpickle), each tensor of `state` left as a reference.

    The module that defines `obj`'s class travels by value too, unless it is installed (in
    site-packages), so that a task written in the user's own module runs on workers.
    ValueError if a tensor of `state` is not one `obj` holds: weights copied into it would
    never reach the model.
    """
    buffer = io.BytesIO()
    module = _own_module(obj)
    if module is not None:
        cloudpickle.register_pickle_by_value(module)
    try:
        pickler = _Pickler(buffer, state)
        pickler.dump(obj)
    finally:
        if module is not None:
            cloudpickle.unregister_pickle_by_value(module)
    strays = [name for name, t in state.items() if t.numel() and name not in pickler.referenced]
    if strays:
        raise ValueError(f"state_dict() returns tensors the task does not hold, such as copies: "
                         f"{strays[:5]}; return the model's own state_dict() so that the global "
                         "weights reach the model")
    return buffer.getvalue()


def _own_module(obj: Any) -> ModuleType | None:
    """The user's module defining `obj`'s class; None for __main__ or an installed module."""
    module = sys.modules.get(type(obj).__module__)
    source = getattr(module, "__file__", None)
    if module is None or module.__name__ == "__main__" or source is None:
        return None
    installed = [Path(p).resolve() for p in (*site.getsitepackages(), sysconfig.get_paths()["stdlib"])]
    if any(Path(source).resolve().is_relative_to(root) for root in installed):
        return None
    if module.__name__.partition(".")[0] in ("sdk", "coordinator", "worker", "deltaflow"):
        return None
    return module


def loads_with_weights(data: bytes, state: StateDict) -> Any:
    """The object of `dumps_without_weights`, its references filled from `state`."""
    return _Unpickler(io.BytesIO(data), state).load()
