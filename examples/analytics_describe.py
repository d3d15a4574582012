"""describe() of every numeric column across all workers: count, mean and std.

pandas' describe() also gives min, quartiles and max; those are not sums of per-worker parts
(they would need the rows in one place), so deltaflow gives the rows it can: count, mean, std.

Run it against a coordinator whose workers hold wages.csv (scripts/demo.sh starts such a cluster):

    DELTAFLOW_KIT=fed/users/alice python examples/analytics_describe.py [HOST:PORT]
"""

import sys

from sdk import dataset
from sdk import pandas as pd
from sdk.client import Client
from sdk.task import HorizontalAnalytics


class DescribeWages(HorizontalAnalytics):
    def __init__(self):
        super().__init__(name="describe_wages", min_clients=2, max_clients=3, wait_timeout=30,
                         connection_timeout=30)

    def dataset(self):
        return {"wages": dataset.DataFrame("wages.csv")}

    def execute(self, wages: pd.DataFrame):
        return wages.describe()


def main(address: str | None = None) -> int:
    client = Client(address)
    task_id = client.create_task(DescribeWages().build())
    if not client.trace(task_id):
        return 1
    print(client.get_result(task_id))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
