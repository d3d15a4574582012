"""The average of every column of wages.csv across all workers: Delta's WageAvg, unchanged.

Run it against a coordinator, as a user of its federation:

    DELTAFLOW_KIT=fed/users/alice python examples/wage_avg.py [HOST:PORT]
"""

import sys

from sdk import dataset
from sdk import pandas as pd
from sdk.client import Client
from sdk.task import HorizontalAnalytics


class WageAvg(HorizontalAnalytics):
    def __init__(self):
        super().__init__(
            name="wage_avg",
            min_clients=2,  # at least 2
            max_clients=3,  # at least min_clients
            wait_timeout=30,  # seconds a compute phase may take at most
            connection_timeout=30,  # seconds every other phase may take at most
        )

    def dataset(self):
        return {"wages": dataset.DataFrame("wages.csv")}

    def execute(self, wages: pd.DataFrame):
        return wages.mean()


def main(address: str | None = None) -> int:
    client = Client(address)
    task_id = client.create_task(WageAvg().build())
    if client.trace(task_id):
        print(client.get_result(task_id))
        return 0
    print("Task error")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
