"""The spread of wages across all workers: var, std and sem, as pandas gives them.

A variance takes two rounds over the same workers: the first finds the mean; in the second each
worker sends sums of its rows' deviations from that mean (never the rows), so a column with a
large mean and a small spread keeps its precision.

Run it against a coordinator whose workers hold wages.csv (scripts/demo.sh starts such a cluster):

    DELTAFLOW_KIT=fed/users/alice python examples/analytics_variance.py [HOST:PORT]
"""

import sys

from sdk import dataset
from sdk import pandas as pd
from sdk.client import Client
from sdk.task import HorizontalAnalytics


class WageSpread(HorizontalAnalytics):
    def __init__(self):
        super().__init__(name="wage_spread", min_clients=2, max_clients=3, wait_timeout=30,
                         connection_timeout=30)

    def dataset(self):
        return {"wages": dataset.DataFrame("wages.csv")}

    def execute(self, wages: pd.DataFrame):
        wage = wages.wage
        return {
            "var": wage.var(),
            "std": wage.std(),
            "sem": wage.sem(),
            # The same variance spelled out: the mean (an aggregate) feeds a row-wise expression.
            "var, by hand": ((wage - wage.mean()) ** 2).sum() / (wage.count() - 1),
            "std of every column": wages.std(),
        }


def main(address: str | None = None) -> int:
    client = Client(address)
    task_id = client.create_task(WageSpread().build())
    if not client.trace(task_id):
        return 1
    for name, value in client.get_result(task_id).items():
        print(f"{name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
