"""Soak: a coordinator and workers on loopback (mutual TLS) running a stream of analytics and
learning tasks, secure and plain, while faults are injected at random: workers SIGKILLed (and
started again) or SIGSTOPped (and SIGCONTed), the coordinator SIGKILLed and restarted on its
port. At the end it prints a table of how the tasks ended; it exits 1 if any task is stuck
(not ended within --settle seconds after the soak) or lost (its id unknown to the coordinator).

Usage: python scripts/soak.py --minutes 10 [--workers 4] [--seed 0] [--root DIR]

An analytics task (WageAvg: the mean of each column) that finished is checked against pandas
over the stacked rows of the workers its TaskInfo names ("exact"); where it names none, the
result is only checked finite and within the data's range ("in range"). A learning task's
weights are checked finite, with the model's keys and shapes ("finite"): no oracle here.
"""

from __future__ import annotations

import argparse
import random
import re
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas
import psutil
import torch
from torch import nn
from torch.utils.data import DataLoader

from deltaflow.localcluster import LocalCluster
from deltaflow.samples import regression, wages
from sdk import dataset
from sdk.client import Client, ClientError
from sdk.proto import services_pb2 as pb
from sdk.task import FedAvg, HorizontalAnalytics, HorizontalLearning

ENDED = {pb.TASK_STATE_FINISHED, pb.TASK_STATE_ERROR, pb.TASK_STATE_CANCELLED}
# The log line of a task that was running when the coordinator restarted, learning or analytics.
CARRIED_ON = re.compile(r"after a coordinator restart|the coordinator restarted while the task")


class WageAvg(HorizontalAnalytics):
    """The mean of every column of wages.csv over the workers that take part."""

    def __init__(self, secure: bool, max_clients: int) -> None:
        super().__init__(name="soak_wage_avg", min_clients=2, max_clients=max_clients,
                         wait_timeout=15, connection_timeout=15, secure_aggregation=secure)

    def dataset(self):
        return {"wages": dataset.DataFrame("wages.csv")}

    def execute(self, wages):
        return wages.mean()


class Linear(HorizontalLearning):
    """A linear model on regression.npz, 1 or 2 rounds of full-batch SGD."""

    def __init__(self, secure: bool, max_clients: int, rounds: int) -> None:
        super().__init__(name="soak_linear", max_rounds=rounds, validate_interval=1,
                         validate_frac=0.2, secure_aggregation=secure,
                         strategy=FedAvg(min_clients=2, max_clients=max_clients,
                                         wait_timeout=30, connection_timeout=20))
        self.model = nn.Linear(4, 1)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)

    def dataset(self):
        return dataset.Dataset("regression.npz")

    def make_train_dataloader(self, ds):
        return DataLoader(ds, batch_size=1000)

    def make_validate_dataloader(self, ds):
        return DataLoader(ds, batch_size=1000)

    def train(self, dataloader):
        for x, y in dataloader:
            self.optimizer.zero_grad()
            nn.functional.mse_loss(self.model(x), y).backward()
            self.optimizer.step()

    def validate(self, dataloader):
        with torch.no_grad():
            return {"mse": float(sum(nn.functional.mse_loss(self.model(x), y).item()
                                     for x, y in dataloader))}

    def state_dict(self):
        return self.model.state_dict()


@dataclass
class Tally:
    """What the soak saw: tasks by id and kind, outcomes, faults, the coordinator's peaks."""

    kinds: dict[int, str] = field(default_factory=dict)
    outcomes: Counter = field(default_factory=Counter)  # "exact", "in range", "finite", ...
    wrong: list[str] = field(default_factory=list)
    reasons: Counter = field(default_factory=Counter)
    refused: Counter = field(default_factory=Counter)  # create_task calls that got no id
    faults: Counter = field(default_factory=Counter)
    carried_on: Counter = field(default_factory=Counter)  # state -> tasks a restart carried on
    stuck: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    peak_rss: int = 0
    peak_fds: int = 0
    stop_error: str = ""


class Soak:
    """The cluster, the task stream, the faults and the tally."""

    def __init__(self, root: Path, workers: int, seed: int, rows: int, every: float) -> None:
        self.rng = random.Random(seed)  # the task stream's
        self.fault_rng = random.Random(seed + 1)  # the faults', so that they replay by seed
        self.every = every  # mean seconds between faults; a pause or outage lasts up to this
        self.cluster = LocalCluster(root)
        self.frames = {f"w{i}": wages(rows, seed=i) for i in range(workers)}
        self.tally = Tally()
        self.port = 0
        self.down: set[str] = set()  # workers killed or stopped now
        self.lock = threading.Lock()
        self.done = threading.Event()

    # -- the cluster ---------------------------------------------------------------------------

    def start(self) -> Client:
        self.port = int(self.cluster.start_coordinator(0).rsplit(":", 1)[1])
        for i, name in enumerate(self.frames):
            np.savez(self.cluster.data_dir(name) / "regression.npz", **regression(100, i))
            self._start_worker(name, wait=False)
        for name in self.frames:
            self.cluster.wait_connected(name)
        return self.cluster.client(timeout=10)

    def _start_worker(self, name: str, wait: bool = False) -> None:
        self.cluster.start_worker(name, {"wages.csv": self.frames[name]}, wait, "--min-rows", "1")

    def _sample(self) -> None:
        """Records the coordinator's RSS and open fds while the soak runs."""
        while not self.done.wait(0.5):
            coordinator = self.cluster.coordinator
            try:
                process = psutil.Process(coordinator.process.pid)
                self.tally.peak_rss = max(self.tally.peak_rss, process.memory_info().rss)
                self.tally.peak_fds = max(self.tally.peak_fds, process.num_fds())
            except (psutil.Error, AttributeError):
                pass

    # -- faults --------------------------------------------------------------------------------

    def inject(self, until: float, coordinator_kills: int, worker_faults: int) -> None:
        """Injects faults at random intervals (mean `self.every` s) until `until`, at most
        `coordinator_kills` coordinator restarts and `worker_faults` worker faults."""
        rng = self.fault_rng
        while not self.done.wait(min(rng.uniform(0.3, 1.7) * self.every,
                                     max(0.0, until - time.monotonic()))) \
                and time.monotonic() < until:
            choices = []
            if self.tally.faults["coordinator SIGKILL"] < coordinator_kills:
                choices.append(self._kill_coordinator)
            if sum(self.tally.faults[f] for f in ("worker SIGKILL", "worker SIGSTOP")) < worker_faults:
                choices += [self._kill_worker, self._stop_worker]
            if not choices:
                return
            rng.choice(choices)()

    def _kill_coordinator(self) -> None:
        self._note("coordinator SIGKILL")
        self.cluster.coordinator.process.kill()
        self.cluster.coordinator.process.wait()
        time.sleep(self.fault_rng.uniform(0.2, 3))
        self.cluster.start_coordinator(self.port)

    def _kill_worker(self) -> None:
        name = self.fault_rng.choice(sorted(self.frames))
        self._note("worker SIGKILL", name)
        daemon = self.cluster.workers[name]
        daemon.process.kill()
        daemon.process.wait()
        time.sleep(self.fault_rng.uniform(0.5, self.every / 2))
        self._start_worker(name)

    def _stop_worker(self) -> None:
        name = self.fault_rng.choice(sorted(self.frames))
        self._note("worker SIGSTOP", name)
        daemon = self.cluster.workers[name]
        daemon.signal(signal.SIGSTOP)
        time.sleep(self.fault_rng.uniform(0.5, self.every))
        daemon.signal(signal.SIGCONT)

    def _note(self, fault: str, name: str = "") -> None:
        self.tally.faults[fault] += 1
        print(f"[{time.strftime('%H:%M:%S')}] {fault} {name}".rstrip(), file=sys.stderr,
              flush=True)

    # -- the task stream -----------------------------------------------------------------------

    def submit(self, client: Client) -> list[int]:
        """Creates one task of a random kind; its id (recorded), or none (and why)."""
        kind = self.rng.choice(["analytics secure", "analytics plain",
                                "learning secure", "learning plain"])
        secure = kind.endswith("secure")
        task = (WageAvg(secure, len(self.frames)) if kind.startswith("analytics")
                else Linear(secure, len(self.frames), self.rng.choice([1, 2])))
        try:
            task_id = client.create_task(task.build())
        except ClientError as error:
            self.tally.refused[f"{error.code.name}: {_shape(str(error))}"] += 1
            return []
        self.tally.kinds[task_id] = kind
        return [task_id]

    def poll(self, client: Client, ids: list[int]) -> list[int]:
        """Checks the tasks `ids`; those still not ended (or not reachable now)."""
        running = []
        for task_id in ids:
            try:
                info = client.get_task(task_id)
            except ClientError as error:
                if error.code.name == "NOT_FOUND":
                    self.tally.lost.append(task_id)
                else:
                    running.append(task_id)
                continue
            if info.state not in ENDED:
                running.append(task_id)
                continue
            try:
                self._judge(client, task_id, info)
            except ClientError:
                running.append(task_id)  # the coordinator went away while we read the result
        return running

    def _judge(self, client: Client, task_id: int, info: pb.TaskInfo) -> None:
        kind = self.tally.kinds[task_id]
        if any(CARRIED_ON.search(entry.message) for entry in client.logs(task_id)):
            self.tally.carried_on[pb.TaskState.Name(info.state).removeprefix("TASK_STATE_")] += 1
        if info.state != pb.TASK_STATE_FINISHED:
            state = pb.TaskState.Name(info.state).removeprefix("TASK_STATE_")
            self.tally.reasons[f"{state}: {_shape(info.error)}"] += 1
            return
        result = client.get_result(task_id)
        if kind.startswith("learning"):
            good = (set(result) == {"weight", "bias"} and result["weight"].shape == (1, 4)
                    and all(torch.isfinite(t).all() for t in result.values()))
            check = "finite"
        elif info.workers and set(info.workers) <= set(self.frames):
            good = self._matches(result, info.workers)
            check = "exact"
        else:
            stacked = pandas.concat(self.frames.values())
            values = np.asarray(result, float)
            good = bool(np.isfinite(values).all() and (values >= stacked.min().to_numpy()).all()
                        and (values <= stacked.max().to_numpy()).all())
            check = "in range"
        if good:
            self.tally.outcomes[f"{kind}, {check}"] += 1
            return
        if kind.startswith("learning"):
            self.tally.wrong.append(f"task {task_id} ({kind}): weights not finite or misshapen")
            return
        matching = [", ".join(names) for size in range(2, len(self.frames) + 1)
                    for names in combinations(sorted(self.frames), size)
                    if self._matches(result, names)]
        self.tally.wrong.append(
            f"task {task_id} ({kind}, {check}): TaskInfo names workers "
            f"{', '.join(info.workers) or 'none'}, but the result is the mean over the rows of "
            f"{' or '.join(matching) or 'no set of workers'}")

    def _matches(self, result: object, names: Iterable[str]) -> bool:
        """Whether an analytics result is WageAvg over the stacked rows of workers `names`."""
        stacked = pandas.concat([self.frames[name] for name in names])
        return bool(np.allclose(np.asarray(result, float), stacked.mean().to_numpy(), rtol=1e-7))

    def run(self, minutes: float, inflight: int, coordinator_kills: int,
            worker_faults: int, settle: float) -> Tally:
        """Soaks for `minutes`, waits up to `settle` s for the tasks to end, stops the cluster
        (also when interrupted); the tally."""
        try:
            self._soak(minutes, inflight, coordinator_kills, worker_faults, settle)
        finally:
            self.done.set()
            try:
                self.cluster.stop()
            except Exception as error:  # noqa: BLE001 - reported in the table
                self.tally.stop_error = str(error)
        return self.tally

    def _soak(self, minutes: float, inflight: int, coordinator_kills: int,
              worker_faults: int, settle: float) -> None:
        client = self.start()
        until = time.monotonic() + 60 * minutes
        threading.Thread(target=self._sample, daemon=True).start()
        faults = threading.Thread(target=self.inject, daemon=True,
                                  args=(until, coordinator_kills, worker_faults))
        faults.start()
        running: list[int] = []
        while time.monotonic() < until:
            running = self.poll(client, running)
            if len(running) < inflight:
                running += self.submit(client)
            time.sleep(0.2)
        faults.join()  # the fault in progress ends with its daemon running again
        deadline = time.monotonic() + settle
        while running and time.monotonic() < deadline:
            running = self.poll(client, running)
            time.sleep(0.5)
        self.tally.stuck = running + self._orphans(client)

    def _orphans(self, client: Client) -> list[int]:
        """Tasks the coordinator lists as not ended that the soak never got an id for (a
        create_task cut short by a fault)."""
        return [t.task_id for t in client.list_tasks(10_000)
                if t.task_id not in self.tally.kinds and t.state not in ENDED]


def _shape(message: str) -> str:
    """A message with its numbers and worker names blanked, so that like reasons count as one."""
    message = re.sub(r"\b(w\d+)\b", "wN", message)
    message = re.sub(r"127\.0\.0\.1:\d+", "ADDR", message)
    return re.sub(r"\d+(\.\d+)?", "N", message)[:160]


def table(tally: Tally, minutes: float, workers: int) -> str:
    finished = sum(tally.outcomes.values())
    failed = sum(tally.reasons.values())
    rows = [("minutes", f"{minutes:g}"), ("workers", str(workers)),
            *((f"fault: {f}", str(n)) for f, n in sorted(tally.faults.items())),
            ("tasks run (got an id)", str(len(tally.kinds))),
            *((f"  of kind {k}", str(n)) for k, n in sorted(Counter(tally.kinds.values()).items())),
            ("finished, result as expected", str(finished)),
            *((f"  {k}", str(n)) for k, n in sorted(tally.outcomes.items())),
            ("finished, result wrong", str(len(tally.wrong))),
            ("failed with a reason", str(failed)),
            *((f"  {r}", str(n)) for r, n in tally.reasons.most_common()),
            ("create_task refused (no id)", str(sum(tally.refused.values()))),
            *((f"  {r}", str(n)) for r, n in tally.refused.most_common()),
            ("carried on after a coordinator restart", str(sum(tally.carried_on.values()))),
            *((f"  then {state}", str(n)) for state, n in sorted(tally.carried_on.items())),
            ("stuck", str(len(tally.stuck))), ("lost", str(len(set(tally.lost)))),
            ("coordinator peak RSS (MiB)", f"{tally.peak_rss / 2**20:.0f}"),
            ("coordinator peak open fds", str(tally.peak_fds)),
            ("daemons stopped cleanly at the end", "yes" if not tally.stop_error
             else f"no: {tally.stop_error}")]
    width = max(len(name) for name, _ in rows)
    lines = [f"| {'what':<{width}} | count |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {name:<{width}} | {value} |" for name, value in rows]
    lines += [f"wrong: {line}" for line in tally.wrong]
    lines += [f"stuck: task {i}" for i in tally.stuck]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", type=int, default=200, help="wages rows per worker")
    parser.add_argument("--inflight", type=int, default=3, help="tasks running at once")
    parser.add_argument("--fault-every", type=float, default=15, help="mean seconds between faults")
    parser.add_argument("--coordinator-kills", type=int, default=6)
    parser.add_argument("--worker-faults", type=int, default=30)
    parser.add_argument("--settle", type=float, default=180,
                        help="seconds the tasks have to end after the soak before they count stuck")
    parser.add_argument("--root", type=Path, help="where the cluster lives (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = args.root or Path(folder)
        tally = Soak(root, args.workers, args.seed, args.rows, args.fault_every).run(
            args.minutes, args.inflight, args.coordinator_kills,
            args.worker_faults, args.settle)
        print(table(tally, args.minutes, args.workers), flush=True)
    return 1 if tally.stuck or tally.lost else 0


if __name__ == "__main__":
    sys.exit(main())
