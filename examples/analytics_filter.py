"""Statistics of the rows that pass a filter, across all workers: boolean masks as in pandas.

Each worker filters its own rows (a worker whose filter keeps none still answers, with zeros);
only the sums and counts of the rows kept leave it.

Run it against a coordinator whose workers hold wages.csv (scripts/demo.sh starts such a cluster):

    DELTAFLOW_KIT=fed/users/alice python examples/analytics_filter.py [HOST:PORT]
"""

import sys

from sdk import dataset
from sdk import pandas as pd
from sdk.client import Client
from sdk.task import HorizontalAnalytics


class LongHours(HorizontalAnalytics):
    def __init__(self):
        super().__init__(name="long_hours", min_clients=2, max_clients=3, wait_timeout=30,
                         connection_timeout=30)

    def dataset(self):
        return {"wages": dataset.DataFrame("wages.csv")}

    def execute(self, wages: pd.DataFrame):
        long_hours = wages.hours > 45
        return {
            "share over 45 h": long_hours.mean(),
            "their mean wage": wages[long_hours].wage.mean(),
            "others' mean wage": wages[~long_hours].wage.mean(),
            "over 60 and over 6000": ((wages.age >= 60) & (wages.wage > 6000)).sum(),
            "wages missing, by age": wages[wages.wage.isna()].age.describe(),
        }


def main(address: str | None = None) -> int:
    client = Client(address)
    task_id = client.create_task(LongHours().build())
    if not client.trace(task_id):
        return 1
    for name, value in client.get_result(task_id).items():
        print(f"{name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
