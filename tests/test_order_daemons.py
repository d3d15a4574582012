"""Order statistics over real daemons (mutual TLS, secure aggregation): two workers whose
policies reveal them give pandas' median and quantiles of their stacked rows, and a third,
whose policy does not, refuses at admission naming the policy key."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from cluster import log_text
from test_pandas import assert_same

from sdk import dataset
from sdk.task import HorizontalAnalytics

REVEALING = """\
[analytics]
users = ["*"]
min_rows = 1
reveal_order_statistics = true
"""


class Quartiles(HorizontalAnalytics):
    def __init__(self) -> None:
        super().__init__(name="quartiles", min_clients=2, max_clients=3, wait_timeout=60,
                         connection_timeout=60)

    def dataset(self):
        return {"d": dataset.DataFrame("d.csv")}

    def execute(self, d):
        return (d.x.median(), d[["x", "n"]].quantile([0.25, 0.75]), d.n.max(),
                d.groupby("n").x.median())


def test_median_and_quantiles_through_secure_aggregation_and_a_refusal(cluster):
    cluster.start_coordinator()
    rng = np.random.default_rng(7)
    frames = {name: pd.DataFrame({"x": rng.normal(50, 20, rows).round(2),
                                  "n": rng.integers(0, 9, rows)})
              for name, rows in (("w1", 30), ("w2", 1), ("w3", 20))}
    for name in ("w1", "w2"):
        cluster.start_worker(name, {"d.csv": frames[name]}, policy=REVEALING)
    cluster.start_worker("w3", {"d.csv": frames["w3"]},
                         policy=REVEALING.replace("true", "false"))
    client = cluster.client()
    task = Quartiles()
    task_id = client.create_task(task.build())
    log = io.StringIO()
    assert client.trace(task_id, out=log), log.getvalue()
    assert "8 step(s) to compute" in log.getvalue()
    assert_same(client.get_result(task_id),
                task.execute(pd.concat([frames["w1"], frames["w2"]], ignore_index=True)))
    assert ("worker w3 refused task 1: the task asks for order statistics (quantile, median, "
            "min or max: single rows' values), which its policy does not reveal ([analytics] "
            "reveal_order_statistics)") in log_text(client, task_id)
