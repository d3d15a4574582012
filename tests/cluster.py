"""Real daemons for tests: a coordinator and workers as subprocesses on 127.0.0.1."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate, timeout: float = 20.0, what: str = "a condition"):
    """Polls `predicate` until it returns something truthy; fails the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Daemon:
    """One `deltaflow` subprocess whose stdout and stderr go to a log file."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "deltaflow", *args],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


class Cluster:
    """A coordinator and its workers, stopped at the end of the test."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.daemons: list[Daemon] = []
        self.coordinator: Daemon | None = None
        self.address = ""
        self.workers: dict[str, Daemon] = {}

    def start_coordinator(self, port: int = 0, *extra: str) -> str:
        state = self.tmp / "state"
        daemon = Daemon(["coordinator", "--listen", f"127.0.0.1:{port}", "--state-dir", str(state),
                         *extra], self.tmp / "coordinator.log")
        self.daemons.append(daemon)
        self.coordinator = daemon
        start = len(daemon.log())
        found = wait_for(lambda: re.search(r"listening on 127\.0\.0\.1:(\d+)\n",
                                           daemon.log()[start:]), what="the coordinator to listen")
        self.address = f"127.0.0.1:{found.group(1)}"
        return self.address

    def start_worker(self, name: str, frames: dict[str, pd.DataFrame] | None = None,
                     wait: bool = True) -> Daemon:
        data_dir = self.tmp / "data" / name
        data_dir.mkdir(parents=True, exist_ok=True)
        for file, frame in (frames or {}).items():
            frame.to_csv(data_dir / file, index=False, sep="\t" if file.endswith(".tsv") else ",")
        daemon = Daemon(["worker", "--coordinator", self.address, "--name", name,
                         "--data-dir", str(data_dir)], self.tmp / f"worker-{name}.log")
        self.daemons.append(daemon)
        self.workers[name] = daemon
        if wait:
            self.wait_connected(name)
        return daemon

    def wait_connected(self, name: str, after: int = 0) -> None:
        assert self.coordinator is not None
        wait_for(lambda: f"worker {name} connected" in self.coordinator.log()[after:],
                 what=f"worker {name} to connect")

    def stop(self) -> None:
        for daemon in reversed(self.daemons):
            daemon.stop()


def wages(rows: int, seed: int, nan_fraction: float = 0.1) -> pd.DataFrame:
    """A synthetic wages table with missing values."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "age": rng.integers(20, 65, rows),
        "wage": rng.normal(5000, 800, rows).round(2),
        "hours": rng.normal(40, 5, rows).round(1),
    })
    frame.loc[rng.random(rows) < nan_fraction, "wage"] = np.nan
    return frame
