"""Eight simulated federated clients, run as one group of the worker's engine.

Each client is a Task: ``load`` makes its own synthetic, non-IID shard of a binary
classification problem (on the CPU, once); ``train`` fits a small torch MLP on the device the
engine picks (a GPU with room for it, else the CPU) and returns its metrics. The engine runs the
clients in subprocesses, as many at once as its limits allow, and writes the group's report.

Run: python examples/engine_simulated_clients.py [--workdir DIR] [--epochs 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from worker.engine import Scheduler, Task, TaskGroup  # noqa: E402

FEATURES = 20


class SimulatedClient(Task):
    """One client with ``samples`` rows, shifted away from the others by its ``seed``."""

    def __init__(self, client: int, samples: int, epochs: int) -> None:
        super().__init__(f"client-{client}", estimate_memory="128MiB",
                         estimate_cuda_memory="512MiB")
        self.client, self.samples, self.epochs = client, samples, epochs

    def load(self) -> None:
        rule = torch.randn(FEATURES, generator=torch.Generator().manual_seed(0))
        own = torch.Generator().manual_seed(1000 + self.client)
        x = torch.randn(self.samples, FEATURES, generator=own) + 0.3 * self.client / 8
        noise = 0.5 * torch.randn(self.samples, generator=own)
        y = ((x @ rule + noise) > 0).float()
        split = int(0.8 * self.samples)
        self.train_set, self.test_set = (x[:split], y[:split]), (x[split:], y[split:])

    def train(self, device: str) -> dict:
        torch.set_num_threads(1)  # the engine runs several clients side by side
        torch.manual_seed(self.client)
        model = nn.Sequential(nn.Linear(FEATURES, 32), nn.ReLU(), nn.Linear(32, 1)).to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        loss_fn = nn.BCEWithLogitsLoss()
        x, y = (t.to(device) for t in self.train_set)
        for _ in range(self.epochs):
            for batch in torch.randperm(len(x), device=device).split(32):
                optimizer.zero_grad()
                loss = loss_fn(model(x[batch]).squeeze(1), y[batch])
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            tx, ty = (t.to(device) for t in self.test_set)
            logits = model(tx).squeeze(1)
            accuracy = ((logits > 0).float() == ty).float().mean().item()
            test_loss = loss_fn(logits, ty).item()
        return {"samples": len(x), "epochs": self.epochs, "test_loss": round(test_loss, 4),
                "test_accuracy": round(accuracy, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", help="where tasks work and reports go (default: a new "
                        "temporary directory)")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    workdir = args.workdir or tempfile.mkdtemp(prefix="engine-clients-")

    group = TaskGroup("simulated-clients")
    for client in range(8):
        group.add_task(SimulatedClient(client, samples=600 + 100 * client, epochs=args.epochs))
    result = Scheduler(workdir).execute(group)

    report = Path(workdir) / "reports" / f"{group.group_name}.md"
    print(report.read_text())
    finished = [e["data"] for e in result.values() if e["status"] == "FINISHED"]
    total = sum(d["samples"] for d in finished)
    if finished:
        mean = sum(d["test_accuracy"] * d["samples"] for d in finished) / total
        print(f"{len(finished)}/8 clients finished; sample-weighted test accuracy {mean:.3f}")
    print(f"reports: {report} and {report.with_suffix('.json')}")
    sys.exit(0 if len(finished) == 8 else 1)


if __name__ == "__main__":
    main()
