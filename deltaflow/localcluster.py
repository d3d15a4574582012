"""A coordinator and workers as subprocesses on this machine: for the demo, benchmarks, tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

import grpc

from sdk.client import Client
from sdk.trust import Kit
from sdk.wire import CHANNEL_OPTIONS
from sdk.trust.provision import add_participants, create_federation

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 20.0, what: str = "a condition") -> T:
    """Polls `predicate` until it returns something truthy; TimeoutError after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


STOP_SECONDS = 20.0  # how long a daemon has to exit after SIGTERM (on a loaded machine too)


class DaemonError(Exception):
    """A daemon did not stop cleanly."""


class Daemon:
    """One `deltaflow` subprocess whose stdout and stderr go to a log file."""

    def __init__(self, args: list[str], log_path: Path,
                 env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "deltaflow", *args],
            stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1",
                 **(env or {})},
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self) -> int:
        """SIGTERM (after SIGCONT, in case it was stopped), and its exit code; DaemonError if
        it was running and did not exit 0 within STOP_SECONDS (then it is SIGKILLed). A daemon
        that had already exited is not checked: a test may have killed it."""
        if self.process.poll() is not None:
            self._log.close()
            return self.process.returncode
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        try:
            code = self.process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGABRT)  # faulthandler: its threads' stacks
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            raise DaemonError(f"{self} did not stop within {STOP_SECONDS} s of SIGTERM (its "
                              "threads' stacks are at the end of its log)") from None
        finally:
            self._log.close()
        if code != 0:
            raise DaemonError(f"{self} exited with code {code} on SIGTERM")
        return code

    def __str__(self) -> str:
        return f"deltaflow {self.args[0]} (pid {self.process.pid}, log {self.log_path})"


class LocalCluster:
    """A coordinator and its workers under one folder; `stop()` ends them all.

    By default it is a federation of its own: `root/fed` holds its CA and kits (users `alice`,
    an analyst, and `root`, an admin; a worker's kit is made when it first starts), and every
    wire is mutual TLS. `secure=False` runs everything with --insecure instead. Its workers
    start their engine's template (torch imported) at their first learning task, unless
    `warm_start`, as `deltaflow worker` does by default: many short clusters that run no
    learning task stay light.
    """

    USERS = (("alice", "analyst"), ("bob", "analyst"), ("root", "admin"))

    def __init__(self, root: Path, secure: bool = True, warm_start: bool = False) -> None:
        self.root = root
        self.warm_start = warm_start
        self.root.mkdir(parents=True, exist_ok=True)
        self.daemons: list[Daemon] = []
        self.coordinator: Daemon | None = None
        self.address = ""
        self.workers: dict[str, Daemon] = {}
        self.federation = self.root / "fed" if secure else None
        if self.federation is not None and not (self.federation / "ca").exists():
            create_federation(self.federation, ["127.0.0.1:6700"], [], list(self.USERS))

    def kit(self, name: str) -> Path:
        """The kit of participant `name`, a worker's made on first use; the federation must be
        secure."""
        assert self.federation is not None, "an insecure cluster has no kits"
        for folder in ("users", "workers"):
            if (self.federation / folder / name).is_dir():
                return self.federation / folder / name
        add_participants(self.federation / "ca", None, [name], [])
        return self.federation / "workers" / name

    def client(self, user: str = "alice", **options: Any) -> Client:
        """A Client of this cluster's coordinator, as `user` (with a secure cluster)."""
        kit = self.kit(user) if self.federation is not None else None
        return Client(self.address, kit=kit, **options)

    def crl(self) -> bytes:
        """The federation's current revocation list, as the coordinator hands it to workers."""
        assert self.federation is not None, "an insecure cluster has no revocation list"
        return (self.federation / "ca" / "revoked.crl").read_bytes()

    def channel(self, name: str = "alice", **options: Any) -> grpc.Channel:
        """A gRPC channel to the coordinator as participant `name` (mutual TLS with its kit;
        plaintext in an insecure cluster), with the SDK's channel options."""
        settings = [*CHANNEL_OPTIONS, *options.items()]
        if self.federation is None:
            return grpc.insecure_channel(self.address, options=settings)
        credentials = Kit.load(self.kit(name)).channel_credentials()
        return grpc.secure_channel(self.address, credentials, options=settings)

    # A few workers: heartbeats often, so that a hung one is dropped in seconds (`extra` may
    # say otherwise); the daemon's defaults are slow, for thousands of workers.
    HEARTBEATS = ("--heartbeat-interval", "1", "--heartbeat-timeout", "4")

    def start_coordinator(self, port: int = 0, *extra: str) -> str:
        """Starts the coordinator on 127.0.0.1 (port 0: any free one); its address."""
        identity = (["--kit", str(self.federation / "coordinator")] if self.federation
                    else ["--insecure"])
        daemon = Daemon(["coordinator", *identity, "--listen", f"127.0.0.1:{port}",
                         "--state-dir", str(self.root / "state"), *self.HEARTBEATS, *extra],
                        self.root / "coordinator.log")
        self.daemons.append(daemon)
        self.coordinator = daemon
        start = len(daemon.log())
        found = wait_for(lambda: re.search(r"listening on 127\.0\.0\.1:(\d+)\n",
                                           daemon.log()[start:]), what="the coordinator to listen")
        self.address = f"127.0.0.1:{found.group(1)}"
        return self.address

    def data_dir(self, name: str) -> Path:
        path = self.root / "data" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    # Every user may run analytics and learning; plain tasks are allowed; min_rows from flags.
    OPEN_POLICY = """\
[analytics]
users = ["*"]
require_secure_aggregation = false

[learning]
users = ["*"]
"""

    def start_worker(self, name: str, frames: dict[str, pd.DataFrame] | None = None,
                     wait: bool = True, *extra: str, env: dict[str, str] | None = None,
                     policy: str | None = OPEN_POLICY) -> Daemon:
        """Writes `frames` as files into the worker's data dir and `policy` as its site
        policy (None: no policy file, which only an insecure worker accepts), then starts it."""
        data_dir = self.data_dir(name)
        for file, frame in (frames or {}).items():
            frame.to_csv(data_dir / file, index=False, sep="\t" if file.endswith(".tsv") else ",")
        identity = (["--kit", str(self.kit(name))] if self.federation
                    else ["--insecure", "--name", name])
        if policy is not None:
            policy_file = self.root / "policies" / f"{name}.toml"
            policy_file.parent.mkdir(exist_ok=True)
            policy_file.write_text(policy)
            identity += ["--policy", str(policy_file)]
        daemon = Daemon(["worker", *identity, "--coordinator", self.address,
                         "--data-dir", str(data_dir), "--work-dir", str(self.root / "work" / name),
                         "--state-dir", str(self.root / "worker-state" / name),
                         "--warm-start", "yes" if self.warm_start else "no", *extra],
                        self.root / f"worker-{name}.log", env)
        self.daemons.append(daemon)
        self.workers[name] = daemon
        if wait:
            self.wait_connected(name)
        return daemon

    def wait_connected(self, name: str, after: int = 0) -> None:
        """Waits until the coordinator's log says the worker connected (after offset `after`)."""
        assert self.coordinator is not None
        coordinator = self.coordinator
        wait_for(lambda: f"worker {name} connected" in coordinator.log()[after:],
                 what=f"worker {name} to connect")

    def stop(self) -> None:
        """Stops every daemon; DaemonError, once all are stopped, naming those that did not
        stop cleanly."""
        failures = []
        for daemon in reversed(self.daemons):
            try:
                daemon.stop()
            except DaemonError as error:
                failures.append(str(error))
        if failures:
            raise DaemonError("; ".join(failures))

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
