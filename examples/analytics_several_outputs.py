"""Several results from one task: execute() returns a tuple, list or dict of aggregates.

The graph behind it runs in as few rounds as its steps allow: counts and sums first, then the
standard deviation (deviations from the mean), then the share of wages more than two standard
deviations from the mean, which needs both. Arithmetic on aggregates runs on the coordinator.

Run it against a coordinator whose workers hold wages.csv (scripts/demo.sh starts such a cluster):

    DELTAFLOW_KIT=fed/users/alice python examples/analytics_several_outputs.py [HOST:PORT]
"""

import sys

import numpy as np

from sdk import dataset
from sdk import pandas as pd
from sdk.client import Client
from sdk.task import HorizontalAnalytics


class WageReport(HorizontalAnalytics):
    def __init__(self):
        super().__init__(name="wage_report", min_clients=2, max_clients=3, wait_timeout=30,
                         connection_timeout=30)

    def dataset(self):
        return {"wages": dataset.DataFrame("wages.csv")}

    def execute(self, wages: pd.DataFrame):
        wage = wages.wage
        hourly = wage / (wages.hours * 52 / 12)
        z = (wage - wage.mean()) / wage.std()
        return (
            wages.count(),
            {
                "hourly": [hourly.mean(), hourly.std()],
                "log wage mean": np.log(wage).mean(),
                "share beyond 2 std": (z.abs() > 2).sum() / wage.count(),
                "coefficient of variation": wage.std() / wage.mean(),
            },
        )


def main(address: str | None = None) -> int:
    client = Client(address)
    task_id = client.create_task(WageReport().build())
    if not client.trace(task_id):
        return 1
    counts, report = client.get_result(task_id)
    print(counts)
    for name, value in report.items():
        print(f"{name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
