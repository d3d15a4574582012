"""Learning tasks the tests submit, and the data they train on."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from deltaflow.samples import regression as regression_data  # noqa: F401 - for the tests
from sdk import dataset
from sdk.task import FedAvg, HorizontalLearning


class Regression(HorizontalLearning):
    """A linear model behind BatchNorm, trained with full-batch SGD: deterministic."""

    def __init__(self, max_rounds=3, min_clients=2, max_clients=3, wait_timeout=60,
                 connection_timeout=120, validate_frac=0.2, merge_epoch=None,
                 merge_iteration=None, secure_aggregation=True):
        super().__init__(name="regression", max_rounds=max_rounds, validate_interval=1,
                         validate_frac=validate_frac, secure_aggregation=secure_aggregation,
                         strategy=FedAvg(min_clients=min_clients, max_clients=max_clients,
                                         merge_epoch=merge_epoch,
                                         merge_iteration=merge_iteration,
                                         wait_timeout=wait_timeout,
                                         connection_timeout=connection_timeout))
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 1))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)

    def dataset(self):
        return dataset.Dataset("train.npz")

    def make_train_dataloader(self, ds):
        return DataLoader(ds, batch_size=1000, shuffle=False)

    def make_validate_dataloader(self, ds):
        return DataLoader(ds, batch_size=1000, shuffle=False)

    def train(self, dataloader):
        # A worker started with this variable stands for a slow data holder.
        time.sleep(float(os.environ.get("TEST_TRAIN_DELAY", "0")))
        self.model.train()
        for x, y in dataloader:
            self.optimizer.zero_grad()
            loss = nn.functional.mse_loss(self.model(x), y)
            loss.backward()
            self.optimizer.step()

    def validate(self, dataloader):
        self.model.eval()
        with torch.no_grad():
            errors = [nn.functional.mse_loss(self.model(x), y, reduction="sum").item()
                      for x, y in dataloader]
        return {"mse": sum(errors) / len(dataloader.dataset)}

    def state_dict(self):
        return self.model.state_dict()


class BrokenTraining(Regression):
    """Training that fails on every worker, as a user's bug would."""

    def train(self, dataloader):
        raise ValueError("a bug in the user's train()")


class Probe(Regression):
    """Reports, among its metrics, whether grpc was imported in the process it runs in."""

    def validate(self, dataloader):
        return {**super().validate(dataloader), "grpc_loaded": float("grpc" in sys.modules)}


class Canary(Regression):
    """A learning task whose code, once unpickled on a worker, writes a file: the proof that
    the worker ran something of it."""

    def __init__(self, canary: Path) -> None:
        super().__init__(max_rounds=1)
        self.canary = str(canary)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        with open(self.canary, "a") as canary:  # one line per process that ran it
            canary.write(f"the task's code ran in process {os.getpid()}\n")


class Exfiltrating(Regression):
    """A learning task whose train() raises an error carrying its training rows."""

    def train(self, dataloader):
        rows = " ".join(f"{float(v):.6f}" for batch in dataloader for v in batch[0].flatten())
        raise RuntimeError("EXFIL:" + rows)


class Confined(Regression):
    """Reports, among its metrics, what its code reaches on a worker (1.0 yes, 0.0 no): any of
    `secrets` (files it must not read), a TCP connection to 127.0.0.1:`port`, a connection to
    any of `templates` (the engine's templates' sockets: one would fork it a process
    unconfined), a pipe it can write to (the resource tracker's would unlink `victim` from
    /dev/shm, as the worker's user, once the worker stops); its uid; and whether its process
    forked from a template that had imported torch, importing none of it itself."""

    def __init__(self, secrets: list[Path], port: int, templates: list[str] = (),
                 victim: str = "") -> None:
        super().__init__(max_rounds=2, secure_aggregation=False)
        self.secrets = [str(path) for path in secrets]
        self.port = port
        self.templates = list(templates)
        self.victim = victim

    def validate(self, dataloader):
        from worker.engine import inherited

        return {**super().validate(dataloader),
                "read_secret": float(any(map(_readable, self.secrets))),
                "connected": float(_connects(self.port)), "uid": float(os.getuid()),
                "reached_template": float(any(map(_connects_unix, self.templates))),
                "wrote_a_pipe": float(_register_in_pipes(self.victim)),
                "warm": float(inherited.from_template() and "torch" in inherited.MODULES
                              and "torch" not in inherited.imported_here())}


def _readable(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError:
        return False
    return True


def _connects_unix(path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)
    except OSError:
        return False
    return True


def _register_in_pipes(name: str) -> bool:
    """Writes a resource tracker's "register shared memory `name`" line into every pipe this
    process holds open for writing; whether one took it."""
    wrote = False
    for fd in map(int, os.listdir("/proc/self/fd")):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:"):
                wrote |= os.write(fd, f"REGISTER:/{name}:shared_memory\n".encode()) > 0
        except OSError:
            continue  # gone, or a read end
    return wrote


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


class SkipsClipping(Regression):
    """DP-FedAvg whose own train() tries to get a huge update through: it moves every floating
    weight by 1000 and BatchNorm's batch count by 1000, and asks for no clipping itself."""

    def __init__(self, clip_norm: float, noise_multiplier: float, secure_aggregation: bool,
                 max_rounds: int = 2) -> None:
        super().__init__(max_rounds=max_rounds, secure_aggregation=secure_aggregation)
        self.strategy = FedAvg(min_clients=2, max_clients=3, wait_timeout=60,
                               connection_timeout=60, clip_norm=clip_norm,
                               noise_multiplier=noise_multiplier)

    def train(self, dataloader):
        super().train(dataloader)
        with torch.no_grad():
            for tensor in self.model.state_dict().values():
                tensor.add_(1000)


class ExfiltratingUnderDP(Exfiltrating):
    """DP-FedAvg whose train() raises an error carrying its training rows."""

    def __init__(self) -> None:
        super().__init__(max_rounds=1)
        self.strategy = FedAvg(min_clients=2, max_clients=3, wait_timeout=60,
                               connection_timeout=60, clip_norm=1.0, noise_multiplier=1.0)
