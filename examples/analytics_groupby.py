"""Wages and hours per age decade across all workers: groupby with size, mean and std.

Each worker sends its sums and counts per decade; the coordinator adds them up label by label,
so the result has every decade that occurs on any worker, sorted, as pandas' groupby gives it.
The standard deviation per decade takes a second round (deviations from each decade's mean).

Run it against a coordinator whose workers hold wages.csv (scripts/demo.sh starts such a cluster):

    DELTAFLOW_KIT=fed/users/alice python examples/analytics_groupby.py [HOST:PORT]
"""

import sys

from sdk import dataset
from sdk import pandas as pd
from sdk.client import Client
from sdk.task import HorizontalAnalytics


class WagesByDecade(HorizontalAnalytics):
    def __init__(self):
        super().__init__(name="wages_by_decade", min_clients=2, max_clients=3, wait_timeout=30,
                         connection_timeout=30)

    def dataset(self):
        return {"wages": dataset.DataFrame("wages.csv")}

    def execute(self, wages: pd.DataFrame):
        wages["decade"] = wages.age // 10 * 10  # a new column, computed on each worker
        by_decade = wages.groupby("decade")
        return {
            "people": by_decade.size(),
            "mean": by_decade[["wage", "hours"]].mean(),
            "wage std": by_decade.wage.std(),
        }


def main(address: str | None = None) -> int:
    client = Client(address)
    task_id = client.create_task(WagesByDecade().build())
    if not client.trace(task_id):
        return 1
    for name, value in client.get_result(task_id).items():
        print(f"\n{name}:\n{value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
