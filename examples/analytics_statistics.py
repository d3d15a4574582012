"""Counts per value, correlations and a table by two keys across all workers.

`value_counts` sends counts per value; `corr` takes two rounds (each pair of columns' means over
the rows where both are present, then sums of products of deviations from them); a groupby on
two keys gives pandas' MultiIndex, and `agg` several reductions at once. All of it through
secure aggregation, the default: the coordinator sees only the sums over the workers.

Run it against a coordinator whose workers hold wages.csv (scripts/demo.sh starts such a cluster):

    DELTAFLOW_KIT=fed/users/alice python examples/analytics_statistics.py [HOST:PORT]
"""

import sys

from sdk import dataset
from sdk import pandas as pd
from sdk.client import Client
from sdk.task import HorizontalAnalytics


class WageStatistics(HorizontalAnalytics):
    def __init__(self):
        super().__init__(name="wage_statistics", min_clients=2, max_clients=3, wait_timeout=30,
                         connection_timeout=30)

    def dataset(self):
        return {"wages": dataset.DataFrame("wages.csv")}

    def execute(self, wages: pd.DataFrame):
        wages["decade"] = wages.age // 10 * 10
        wages["long_hours"] = wages.hours > 40
        return {
            "people per decade": wages.decade.value_counts(),
            "correlations": wages[["age", "wage", "hours"]].corr(),
            "wage and hours": wages.wage.corr(wages.hours),
            "wage skew": wages.wage.skew(),
            "wage by decade and hours": wages.groupby(["decade", "long_hours"]).wage.agg(
                ["count", "mean", "std"]),
        }


def main(address: str | None = None) -> int:
    client = Client(address)
    task_id = client.create_task(WageStatistics().build())
    if not client.trace(task_id):
        return 1
    for name, value in client.get_result(task_id).items():
        print(f"\n{name}:\n{value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
