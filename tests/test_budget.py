"""The privacy budgets each holder keeps: its ledger and its policy's [privacy] table."""

import os
import re

import numpy as np
import pytest
from cluster import LocalCluster, log_text, wages
from learning_tasks import SkipsClipping, regression_data

from sdk import dataset
from sdk.privacy import DifferentialPrivacy
from sdk.privacy.accounting import Cost, epsilon
from sdk.task import HorizontalAnalytics
from worker.budget import Budgets, BudgetExceeded, PrivacyLedger
from worker.datasets import DataDir
from worker.policy import Policy, PolicyError
from worker.sources import Catalog

BUDGETS = Budgets(epsilon_per_user=2.0, delta_per_user=1e-5, epsilon_total=3.0, delta_total=1e-5)


def cost_of(target_epsilon: float, delta: float = 1e-5) -> Cost:
    """A zCDP cost worth about `target_epsilon` at `delta` (by bisection on rho)."""
    low, high = 0.0, 10.0
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if epsilon(Cost(middle), delta) < target_epsilon else (
            low, middle)
    return Cost(low)


@pytest.fixture
def ledger(tmp_path):
    opened = PrivacyLedger(tmp_path / "state" / "privacy.sqlite3")
    yield opened
    opened.close()


def test_a_user_cannot_spend_past_their_budget_and_the_ledger_survives_a_restart(tmp_path,
                                                                                 ledger):
    sources = {"file:1:2": "wages.csv"}
    ledger.spend("alice", sources, "task-a", "step 1", cost_of(1.8), BUDGETS)
    with pytest.raises(BudgetExceeded, match=r"alice would spend epsilon .* on 'wages.csv'.*"
                                             r"epsilon_per_user=2.*1.8 is spent already"):
        ledger.check("alice", sources, cost_of(1.5), BUDGETS, "task-b")
    ledger.close()
    reopened = PrivacyLedger(tmp_path / "state" / "privacy.sqlite3")
    with pytest.raises(BudgetExceeded):
        reopened.spend("alice", sources, "task-b", "step 1", cost_of(1.5), BUDGETS)
    assert reopened.remaining("alice", "file:1:2", BUDGETS) == pytest.approx(0.2, abs=0.01)
    reopened.spend("alice", sources, "task-b", "step 1", cost_of(0.1), BUDGETS)  # still fits
    reopened.close()


def test_everyones_budget_is_refused_without_naming_the_others(ledger):
    sources = {"file:1:2": "wages.csv"}
    ledger.spend("alice", sources, "t1", "step 1", cost_of(1.9), BUDGETS)
    ledger.spend("carol", sources, "t2", "step 1", cost_of(1.9), BUDGETS)
    with pytest.raises(BudgetExceeded) as refused:
        ledger.check("bob", sources, cost_of(1.9), BUDGETS, "t3")
    assert "epsilon_total=3" in str(refused.value)
    assert "alice" not in str(refused.value) and "carol" not in str(refused.value)
    ledger.check("bob", {"file:9:9": "other.csv"}, cost_of(1.0), BUDGETS, "t3")  # elsewhere


def test_a_resumed_task_is_admitted_on_its_whole_cost_besides_what_it_spent(ledger):
    """A learning task resumed after a coordinator restart is checked again at admission: what
    it spent in its rounds before is part of its whole cost, not more on top of it."""
    sources = {"file:1:2": "wages.csv"}
    ledger.spend("alice", sources, "t1", "round 1", cost_of(1.2), BUDGETS)
    ledger.check("alice", sources, cost_of(1.9), BUDGETS, "t1")
    with pytest.raises(BudgetExceeded, match="1.2 is spent already"):
        ledger.check("alice", sources, cost_of(1.9), BUDGETS, "t2")  # another task


def test_a_step_asked_for_twice_is_paid_twice(ledger):
    sources = {"file:1:2": "wages.csv"}
    ledger.spend("alice", sources, "t1", "step 1", Cost(0.01), BUDGETS)
    ledger.spend("alice", sources, "t1", "step 1", Cost(0.01), BUDGETS)
    assert ledger.spent("file:1:2", "alice") == Cost(0.02)


def test_a_second_name_for_the_same_file_is_the_same_source(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "wages.csv").write_text("wage\n1\n")
    os.link(data / "wages.csv", data / "copy.csv")
    (data / "alias.csv").symlink_to(data / "wages.csv")
    catalog = Catalog(DataDir(data), {"logical": "wages.csv"})
    keys = {catalog.key(name) for name in ("wages.csv", "copy.csv", "alias.csv", "logical")}
    assert catalog.open("alias.csv").key() in keys
    assert len(keys) == 1
    (data / "other.csv").write_text("wage\n1\n")
    assert catalog.open("other.csv").key() not in keys


def test_the_policy_privacy_table():
    policy = Policy.parse("[privacy]\nrequire_differential_privacy = true\n"
                          "epsilon_per_user = 4\n")
    assert policy.privacy == Budgets(require_differential_privacy=True, epsilon_per_user=4)
    assert Policy.parse("[analytics]\nmin_rows = 2\n").privacy is None
    for text, words in [("[privacy]\nepsilon_total = 0", "epsilon_total must be a positive"),
                        ("[privacy]\ndelta_per_user = 1.5", "delta_per_user must be between"),
                        ("[privacy]\nepsilon_per_user = true", "must be a number"),
                        ("[privacy]\nbudget = 3", "has no key 'budget'")]:
        with pytest.raises(PolicyError, match=words):
            Policy.parse(text)


class MeanWage(HorizontalAnalytics):
    def __init__(self, file="wages.csv", privacy=DifferentialPrivacy(epsilon=1.0, delta=1e-5)):
        super().__init__(name="mean_wage", min_clients=2, max_clients=2, wait_timeout=10,
                         connection_timeout=10, privacy=privacy)
        self.file = file

    def dataset(self):
        return {"wages": dataset.DataFrame(self.file)}

    def execute(self, wages):
        return wages.wage.clip(0, 20_000).mean()


PRIVATE_POLICY = LocalCluster.OPEN_POLICY + """
[privacy]
require_differential_privacy = true
epsilon_per_user = 1.2
delta_per_user = 1e-5
"""


def test_each_holder_keeps_budgets_across_names_and_restarts(cluster):
    cluster.start_coordinator()
    for name, seed in (("w1", 1), ("w2", 2)):
        folder = cluster.data_dir(name)
        wages(50, seed).to_csv(folder / "wages.csv", index=False)
        os.link(folder / "wages.csv", folder / "alias.csv")  # the same rows, a second name
        np.savez(folder / "train.npz", **regression_data(40, seed))
        cluster.start_worker(name, policy=PRIVATE_POLICY)
    alice, bob = cluster.client("alice"), cluster.client("bob")

    plain = alice.create_task(MeanWage(privacy=None).build())
    assert alice.wait(plain) is False
    assert ("refused task 1: the task does not ask for differential privacy, which its policy "
            "requires ([privacy] require_differential_privacy)") in log_text(alice, plain)

    first = alice.create_task(MeanWage().build())
    assert alice.wait(first), alice.get_task(first).error
    log = log_text(alice, first)
    assert "worker w1: differential privacy: the task spends epsilon 1" in log
    assert "alice has epsilon 1.2 on 'wages.csv' left of this site's epsilon_per_user=1.2" in log

    again = alice.create_task(MeanWage(file="alias.csv").build())
    assert alice.wait(again) is False
    assert re.search(r"refused task 3: alice would spend epsilon 1\.\d+ in all on 'alias.csv' "
                     r"here .* over this site's epsilon_per_user=1\.2", log_text(alice, again))

    cluster.workers["w1"].stop()
    cluster.start_worker("w1", policy=PRIVATE_POLICY)
    after_restart = alice.create_task(MeanWage().build())
    assert alice.wait(after_restart) is False
    assert "worker w1 refused task 4: alice would spend" in log_text(alice, after_restart)
    assert "bob" not in log_text(alice, after_restart)

    assert bob.wait(bob.create_task(MeanWage().build()))  # bob's budget is his own

    # DP-FedAvg's rounds spend from the same budgets: refused before its code is loaded.
    learning = bob.create_task(SkipsClipping(clip_norm=1.0, noise_multiplier=0.5,
                                             secure_aggregation=True, max_rounds=5).build())
    assert bob.wait(learning) is False
    assert re.search(r"refused task 6: bob would spend epsilon \d+.* in all on 'train.npz'",
                     log_text(bob, learning))
