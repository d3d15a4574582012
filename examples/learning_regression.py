"""Federated learning: a small PyTorch regression trained with FedAvg across the workers.

Each worker holds `regression.npz` (arrays x and y). Run it against a coordinator:
    DELTAFLOW_KIT=fed/users/alice python examples/learning_regression.py [HOST:PORT]
"""

import sys

import torch
from torch import nn
from torch.utils.data import DataLoader

from sdk import dataset
from sdk.client import Client
from sdk.task import FedAvg, HorizontalLearning


class Regression(HorizontalLearning):
    def __init__(self):
        super().__init__(
            name="regression",
            max_rounds=5,  # rounds of FedAvg
            validate_interval=1,  # validate every round
            validate_frac=0.2,  # of each worker's data, held out for validate()
            strategy=FedAvg(min_clients=2, max_clients=3, merge_epoch=1,
                            wait_timeout=60, connection_timeout=30),
        )
        self.model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=0.05)

    def dataset(self):
        return dataset.Dataset("regression.npz")

    def make_train_dataloader(self, ds):
        return DataLoader(ds, batch_size=32, shuffle=True)

    def make_validate_dataloader(self, ds):
        return DataLoader(ds, batch_size=256)

    def train(self, dataloader):
        self.model.to(self.device).train()  # self.device: the device the worker's engine picked
        for x, y in dataloader:
            x, y = x.to(self.device), y.to(self.device)
            self.optimizer.zero_grad()
            nn.functional.mse_loss(self.model(x), y).backward()
            self.optimizer.step()

    def validate(self, dataloader):
        self.model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for x, y in dataloader:
                x, y = x.to(self.device), y.to(self.device)
                total += nn.functional.mse_loss(self.model(x), y, reduction="sum").item()
                count += len(y)
        return {"mse": total / count}

    def state_dict(self):
        return self.model.state_dict()


def main(address: str | None = None) -> int:
    client = Client(address)
    task_id = client.create_task(Regression().build())
    if not client.trace(task_id):
        print("Task error")
        return 1
    weights = client.get_result(task_id)
    print({name: tuple(tensor.shape) for name, tensor in weights.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
