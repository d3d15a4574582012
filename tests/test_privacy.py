"""What a worker refuses to send: aggregates of too few rows, and parts over rows the
coordinator chose."""

from __future__ import annotations

import pandas as pd
import pytest

from cluster import log_text, wages
from sdk import dataset
from sdk.analytics.graph import Graph
from sdk.analytics.plan import Plan, PrivacyError, worker_parts
from sdk.task import HorizontalAnalytics
from tasks import Rows


class SumByCity(HorizontalAnalytics):
    def __init__(self):
        super().__init__(name="by_city", min_clients=2, max_clients=2, wait_timeout=5,
                         connection_timeout=5)

    def dataset(self):
        return {"d": dataset.DataFrame("people.csv")}

    def execute(self, d):
        return d.groupby("city").wage.sum()


def test_a_group_of_one_row_is_refused_without_naming_it(cluster):
    cluster.start_coordinator()
    crowd = wages(30, 1).assign(city=["Lyon", "Nice", "Brest"] * 10)
    lonely = crowd.assign(city=["Lyon"] * 29 + ["Alice's village"])
    cluster.start_worker("w1", {"people.csv": crowd})
    cluster.start_worker("w2", {"people.csv": lonely})
    client = cluster.client()
    task_id = client.create_task(SumByCity().build())
    assert client.wait(task_id) is False
    log = log_text(client, task_id)
    assert ("worker w2 dropped in compute: it reported an error: worker w2: this worker sends "
            "no aggregate of fewer than 3 rows, and 1 group(s), the smallest of 1 row(s)") in log
    assert "Alice" not in log


def test_inputs_for_nodes_a_step_does_not_need_are_refused():
    """A coordinator that sends a row mask as an 'input' would pick the rows summed."""
    built = Rows(lambda d: d[d.age > 0].wage.sum()).build()
    plan = Plan(*Graph.from_proto(built.spec.analytics))
    frame = pd.DataFrame({"age": [30, 40, 50], "wage": [10.0, 20.0, 30.0]})
    mask_node = next(n.id for n in plan.graph.nodes if n.op == "binary")
    with pytest.raises(PrivacyError, match=f"values for nodes \\[{mask_node}\\]"):
        worker_parts(plan, 0, {"d": frame}, {mask_node: pd.Series([False, True, False])})
    parts = worker_parts(plan, 0, {"d": frame}, {}, min_rows=3)
    assert next(iter(parts.values()))["sum"] == 60.0
    with pytest.raises(PrivacyError, match="fewer than 4 rows, and rows kept 3 row"):
        worker_parts(plan, 0, {"d": frame}, {}, min_rows=4)
