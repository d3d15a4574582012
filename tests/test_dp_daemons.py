"""Differential privacy between real daemons: three workers with mutual TLS. The attack of the
issue, one patient's salary picked out by a mask, gives a noisy value whose error has the
calibrated spread; the task log states the cost, the noise each output carries, who adds it
and the workers' own notes (one printable line each); without secure aggregation each worker
adds all of the noise."""

from __future__ import annotations

import io
import math
import re

import numpy as np
import pandas as pd
from cluster import log_text

from coordinator.worker_service import NOTE_CHARS, note_line
from sdk import dataset
from sdk.analytics.graph import Graph
from sdk.analytics.plan import Plan
from sdk.privacy import DifferentialPrivacy
from sdk.privacy.analytics import PrivacyPlan
from sdk.task import HorizontalAnalytics

SALARY_57 = 12_345.67


class Payroll(HorizontalAnalytics):
    def __init__(self, body, secure_aggregation: bool = True) -> None:
        # Ceilings, not waits: a worker's first DP task imports dp-accounting (seconds).
        super().__init__(name="payroll", min_clients=2, max_clients=3, wait_timeout=30,
                         connection_timeout=30, secure_aggregation=secure_aggregation,
                         privacy=DifferentialPrivacy(epsilon=1.0, delta=1e-6))
        self.body = body

    def dataset(self):
        return {"d": dataset.DataFrame("payroll.csv")}

    def execute(self, d):
        return self.body(d)


def payroll(seed: int, first_id: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = np.arange(first_id, first_id + 40)
    return pd.DataFrame({"id": ids, "salary": rng.uniform(2_000, 9_000, 40).round(2),
                         "dept": rng.choice(["a", "b", "c"], 40)})


def run(cluster, task) -> tuple[object, str]:
    client = cluster.client()
    task_id = client.create_task(task.build())
    out = io.StringIO()
    assert client.trace(task_id, out=out), out.getvalue()
    return client.get_result(task_id), log_text(client, task_id)


def test_the_mask_attack_gets_only_a_noisy_answer_and_the_log_says_why(cluster):
    cluster.start_coordinator()
    tables = {"w1": payroll(1, 1), "w2": payroll(2, 41), "w3": payroll(3, 81)}
    tables["w2"].loc[tables["w2"].id == 57, "salary"] = SALARY_57
    for name, table in tables.items():
        cluster.start_worker(name, {"payroll.csv": table}, False)
    for name in tables:
        cluster.wait_connected(name)

    attack = Payroll(lambda d: ((d.id == 57) * d.salary.clip(0, 20_000)).sum())
    released, log = run(cluster, attack)
    plan = Plan(*Graph.from_proto(attack.build().spec.analytics))
    noise = PrivacyPlan(plan, attack.privacy, 9).noise
    ((_, part, _), sum_noise), = noise.items()
    # Each of the three adds 1/2 of the noise: max(min_clients, 3 // 2 + 1) = 2.
    sigma = sum_noise.std() / 1e9 * math.sqrt(3 / 2)
    assert part == "sum" and sigma > 10_000  # calibrated to the clip, 20 000
    assert released != SALARY_57 and abs(released - SALARY_57) < 5.5 * sigma
    assert re.search(r"the task spends epsilon (0\.99\d*|1) at delta 1e-06", log), log
    assert ("at least 2 workers' shares (the threshold, t = max(min_clients, floor(0.5 x "
            "selected) + 1) = 2 of 3 selected (secagg_threshold 0.5): 1 may drop out, and a "
            "coordinator lying about who dropped needs 2t - n = 1 colluding worker(s)") in log
    assert "colluding workers can subtract their own shares" in log
    assert "noise of sum() node" in log and "no set is suppressed by min_rows" in log
    for name in tables:
        assert f"worker {name}: step 1: added its share of the noise before masking" in log

    in_the_clear = Payroll(lambda d: d.assign(salary=d.salary.clip(0, 20_000)).groupby(
        "dept", keys=["a", "b", "zz"]).salary.mean(), secure_aggregation=False)
    means, log = run(cluster, in_the_clear)
    assert list(means.index) == ["a", "b", "zz"]  # noisy: 40 rows a holder, all noise each
    assert "it costs accuracy" in log
    assert "worker w1: step 1: added all of the noise to its own parts" in log


def test_a_workers_note_is_one_printable_line_of_bounded_length():
    assert note_line("spent\n0.3\tof\x1b[2J 1.0\u202e ") == "spent 0.3 of[2J 1.0"
    long = note_line("x" * 1000)
    assert long.startswith("x" * NOTE_CHARS) and long.endswith("(cut short)")
    assert len(long) < NOTE_CHARS + 20
