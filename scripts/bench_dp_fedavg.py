"""DP-FedAvg beside plain FedAvg: accuracy and time on a small classification task.

Synthetic data made here: 3 classes of Gaussian clouds in 10 features, 3 holders of --rows rows
each (each holder's classes in its own proportions), and a test set of 3000 rows kept here. A
softmax regression (33 floating-point values) trains for --rounds rounds of one local epoch
(SGD, batches of 32) over real daemons (deltaflow.localcluster: a coordinator and 3 workers over
mutual TLS, secure aggregation on), once without DP and once per noise multiplier with
clip_norm --clip; the global model's accuracy is measured here on the test set.

Columns: the epsilon of all rounds at delta 1e-6 (dp-accounting's, as the task log reports it);
test accuracy (mean over repeats, and the spread); seconds per round (median of the rounds
after the first, from the task log) and the whole task's seconds from create_task to finished,
each against FedAvg without DP; and, in process, what the daemon's clipping and noise cost per
million values, which the small model here does not show. A one-round task runs first,
unmeasured (first loads are slower), and each repeat starts with another configuration.

Usage: python scripts/bench_dp_fedavg.py [--noise 0.5,2] [--rounds 10] [--rows 1000]
                                          [--clip 1.0] [--repeats 1]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from deltaflow.localcluster import LocalCluster
from sdk import dataset
from sdk.task import FedAvg, HorizontalLearning

FEATURES, CLASSES, HOLDERS = 10, 3, 3
CENTRES = np.random.default_rng(0).normal(scale=1.2, size=(CLASSES, FEATURES))


def make_data(rows: int, seed: int) -> dict[str, np.ndarray]:
    """x, y for one holder: its classes in proportions of its own, clouds of unit spread."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(CLASSES, 4.0))
    y = rng.choice(CLASSES, size=rows, p=weights)
    x = CENTRES[y] + rng.normal(size=(rows, FEATURES))
    return {"x": x.astype(np.float32), "y": y.astype(np.int64)}


class Classifier(HorizontalLearning):
    """Softmax regression with local SGD; DP-FedAvg when given a noise multiplier."""

    def __init__(self, rounds: int, clip_norm: float | None = None,
                 noise_multiplier: float | None = None) -> None:
        super().__init__(name="bench-dp-fedavg", max_rounds=rounds, validate_frac=0,
                         strategy=FedAvg(min_clients=HOLDERS, max_clients=HOLDERS,
                                         wait_timeout=300, connection_timeout=300,
                                         clip_norm=clip_norm, noise_multiplier=noise_multiplier))
        torch.manual_seed(0)
        self.model = nn.Linear(FEATURES, CLASSES)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.05)

    def dataset(self):
        return dataset.Dataset("bench.npz")

    def make_train_dataloader(self, ds):
        return DataLoader(ds, batch_size=32, shuffle=True)

    def make_validate_dataloader(self, ds):
        return DataLoader(ds, batch_size=1024)

    def train(self, dataloader):
        for x, y in dataloader:
            self.optimizer.zero_grad()
            nn.functional.cross_entropy(self.model(x), y).backward()
            self.optimizer.step()

    def validate(self, dataloader):
        return {}

    def state_dict(self):
        return self.model.state_dict()


def accuracy(state: dict[str, torch.Tensor], test: dict[str, np.ndarray]) -> float:
    logits = torch.from_numpy(test["x"]) @ state["weight"].T + state["bias"]
    return float((logits.argmax(1).numpy() == test["y"]).mean())


def run(cluster: LocalCluster, task: Classifier,
        test: dict[str, np.ndarray]) -> tuple[float, float, float, float | None]:
    """(test accuracy, median seconds a round, task seconds, epsilon or None) of one task."""
    client = cluster.client()
    built = task.build()
    started = time.perf_counter()
    task_id = client.create_task(built)
    if not client.wait(task_id):
        raise SystemExit(f"task {task_id} failed: {client.get_task(task_id).error}")
    seconds = time.perf_counter() - started
    marks = [e.time for e in client.logs(task_id) if e.message.startswith("round ")
             and "/" in e.message.split(":")[0]]
    rounds = [b - a for a, b in itertools.pairwise(marks)]
    epsilon = built.spec.privacy.epsilon if built.spec.HasField("privacy") else None
    return (accuracy(client.get_result(task_id), test), statistics.median(rounds or [0.0]),
            seconds, epsilon)


def release_seconds(values: int, repeats: int = 3) -> float:
    """The worker daemon's DP work for a round of a model of `values` float32 values, in
    process: read the global and trained weights, clip, noise (best of `repeats`)."""
    from sdk.privacy.fedavg import DPFedAvg
    from sdk.proto import task_pb2
    from worker.learning_job import read_floats

    infos = [task_pb2.TensorInfo(name="w", dtype="float32", shape=[values])]
    global_raw = np.random.default_rng(0).normal(size=values).astype(np.float32)
    trained_raw = (global_raw + 0.01).tobytes()
    dp = DPFedAvg(1.0, 1.0, 6, values)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        dp.release(read_floats(global_raw.tobytes(), infos), read_floats(trained_raw, infos), 2)
        best = min(best, time.perf_counter() - started)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--noise", default="0.5,2", help="noise multipliers, comma-separated")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--rows", type=int, default=1000, help="rows per holder")
    parser.add_argument("--clip", type=float, default=1.0, help="DP-FedAvg's clip norm")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    noises = [float(z) for z in args.noise.split(",")]
    test = make_data(3000, 99)
    rows: dict[float | None, list[tuple[float, float, float, float | None]]] = {
        z: [] for z in [None, *noises]}
    with tempfile.TemporaryDirectory() as folder, LocalCluster(Path(folder)) as cluster:
        cluster.start_coordinator()
        for index in range(HOLDERS):
            name = f"holder{index + 1}"
            np.savez(cluster.data_dir(name) / "bench.npz", **make_data(args.rows, index + 1))
            cluster.start_worker(name, None, False)
        for index in range(HOLDERS):
            cluster.wait_connected(f"holder{index + 1}")
        run(cluster, Classifier(1), test)  # warm-up: first loads are slower, unmeasured
        configurations = [None, *noises]
        for repeat in range(args.repeats):
            shift = repeat % len(configurations)  # each configuration first in turn
            for z in configurations[shift:] + configurations[:shift]:
                task = Classifier(args.rounds, args.clip if z else None, z)
                rows[z].append(run(cluster, task, test))
                print(f"  done: noise multiplier {z}", file=sys.stderr, flush=True)

    plain_round = statistics.median(r[1] for r in rows[None])
    plain_task = statistics.median(r[2] for r in rows[None])
    print(f"\nDP-FedAvg vs FedAvg: {HOLDERS} holders x {args.rows} rows, softmax regression "
          f"({FEATURES * CLASSES + CLASSES} values), {args.rounds} rounds, clip norm "
          f"{args.clip:g}, secure aggregation, mutual TLS; {args.repeats} repeat(s) each "
          "(accuracy: mean and range; times: medians)\n")
    print("| noise multiplier | epsilon (delta 1e-6) | test accuracy | round s | round / plain "
          "| task s | task / plain |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for z, results in rows.items():
        accuracies = [r[0] for r in results]
        round_s = statistics.median(r[1] for r in results)
        task_s = statistics.median(r[2] for r in results)
        spread = (f" ({min(accuracies):.3f}-{max(accuracies):.3f})" if len(accuracies) > 1
                  else "")
        label = "no DP (FedAvg)" if z is None else f"{z:g}"
        epsilon = "-" if z is None else f"{results[0][3]:.3g}"
        print(f"| {label} | {epsilon} | {statistics.mean(accuracies):.3f}{spread} | "
              f"{round_s:.3f} | {round_s / plain_round:.2f} | {task_s:.1f} | "
              f"{task_s / plain_task:.2f} |")
    print(f"\nA worker daemon's DP work per round (read, clip, Skellam noise), in process: "
          f"{release_seconds(10**6):.3f} s per million float32 values (best of 3)")


if __name__ == "__main__":
    main()
