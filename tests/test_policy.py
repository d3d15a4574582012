"""Each data holder decides: its site policy, over real daemons, and the policy file itself."""

from __future__ import annotations

import numpy as np
import pytest
from cluster import log_text, wages, wait_for
from learning_tasks import Canary, Exfiltrating, regression_data
from tasks import WageAvg

from deltaflow.localcluster import Daemon, LocalCluster
from sdk.proto import services_pb2 as pb
from sdk.proto import task_pb2
from sdk.trust import Identity
from worker.budget import Budgets
from worker.policy import TEMPLATE, Policy, PolicyError, PolicyRefusal


def policy(analytics='["*"]', learning='["*"]', secure="false", offer='["*"]') -> str:
    return (f"[analytics]\nusers = {analytics}\nrequire_secure_aggregation = {secure}\n"
            f"[learning]\nusers = {learning}\n[datasets]\noffer = {offer}\n")


def test_learning_code_runs_only_where_the_policy_admits_its_sender(cluster, tmp_path):
    cluster.start_coordinator()
    admits = {"w1": '["alice"]', "w2": '["role:analyst"]', "w3": '["bob"]'}
    for seed, (name, learning) in enumerate(admits.items()):
        np.savez(cluster.data_dir(name) / "train.npz", **regression_data(30, seed))
        cluster.start_worker(name, policy=policy(learning=learning))
    canary = tmp_path / "canary"
    client = cluster.client("alice")
    task_id = client.create_task(Canary(canary).build())
    assert client.wait(task_id), client.get_task(task_id).error
    log = log_text(client, task_id)
    assert ("worker w3 refused task 1: learning code from alice is not accepted by its policy "
            "([learning] users)") in log
    assert len(canary.read_text().splitlines()) == 2  # w1 and w2 ran it, w3 did not

    canary.unlink()
    root = cluster.client("root")  # an admin: admitted by none of the three
    task_id = root.create_task(Canary(canary).build())
    assert root.wait(task_id) is False
    log = log_text(root, task_id)
    for name in admits:
        assert (f"worker {name} refused task {task_id}: learning code from root is not "
                "accepted by its policy ([learning] users)") in log
    assert not canary.exists()


def test_a_site_that_requires_secure_aggregation_refuses_a_plain_task(cluster):
    """w1 requires secure aggregation at a threshold of 0.6 or more: a plain task, and a secure
    one at the default 0.5, are refused; one at 0.75 runs."""
    cluster.start_coordinator()
    strict = policy(secure="true").replace("[learning]", "min_secagg_threshold = 0.6\n[learning]")
    cluster.start_worker("w1", {"wages.csv": wages(10, 1)}, policy=strict)
    cluster.start_worker("w2", {"wages.csv": wages(10, 2)})
    client = cluster.client()
    plain = WageAvg().build()
    plain.spec.secure_aggregation = False
    task_id = client.create_task(plain)
    assert client.wait(task_id) is False
    assert ("worker w1 refused task 1: the task switches secure aggregation off, which its "
            "policy requires ([analytics] require_secure_aggregation)") in log_text(client, 1)
    assert client.wait(client.create_task(WageAvg().build())) is False
    assert ("worker w1 refused task 2: the task's secagg_threshold 0.5 is below its policy's "
            "0.6 ([analytics] min_secagg_threshold): fewer colluding share holders would unmask "
            "this holder's input; submit it with secagg_threshold=0.6 or more"
            ) in log_text(client, 2)
    strong = WageAvg().build()
    strong.spec.secagg_threshold = 0.75
    assert client.wait(client.create_task(strong))  # a secure one, at 0.75, runs


@pytest.mark.parametrize("kind", [task_pb2.TASK_KIND_ANALYTICS, task_pb2.TASK_KIND_LEARNING])
def test_the_minimum_secagg_threshold_is_checked_on_the_signed_fraction(kind):
    """Learning and analytics alike; 0 is the default 0.5; NaN is below any minimum; the
    message gives the values whole (rounding could suggest a value that is still refused)."""
    holder = Policy(analytics_users=("*",), learning_users=("*",), min_secagg_threshold=0.6666667)
    signer = Identity("alice", "analyst", 1, 0.0)
    for fraction, admitted in ((0, False), (0.5, False), (0.6666666, False),
                               (float("nan"), False), (0.6666667, True), (0.9, True)):
        spec = task_pb2.TaskSpec(kind=kind, secure_aggregation=True, secagg_threshold=fraction)
        if admitted:
            holder.check(spec, signer)
            continue
        with pytest.raises(PolicyRefusal, match=r"policy's 0.6666667 \(\[analytics\] "
                                                r".*secagg_threshold=0.6666667 or more"):
            holder.check(spec, signer)
    holder.check(task_pb2.TaskSpec(kind=kind, secure_aggregation=False, secagg_threshold=0.5),
                 signer)  # plain tasks: refused only by require_secure_aggregation


def test_only_offered_files_are_advertised_and_the_policy_reloads(cluster):
    cluster.start_coordinator()
    hidden = policy(offer='["public/*"]')
    for seed, name in enumerate(("w1", "w2", "w3")):
        (cluster.data_dir(name) / "public").mkdir()
        wages(10, seed).to_csv(cluster.data_dir(name) / "public" / "wages.csv", index=False)
        (cluster.data_dir(name) / "bad\nname.csv").write_text("a\n1\n")
        cluster.start_worker(name, {"wages.csv": wages(10, seed)},
                             policy=hidden if name == "w3" else policy())
    client = cluster.client()
    task_id = client.create_task(WageAvg().build())
    assert client.wait(task_id)
    assert "selected 2 worker(s): w1, w2" in log_text(client, task_id)
    task_id = client.create_task(WageAvg(file="public/wages.csv").build())
    assert client.wait(task_id)
    assert "selected 3 worker(s): w1, w2, w3" in log_text(client, task_id)
    assert "bad" not in cluster.coordinator.log()

    policy_file = cluster.root / "policies" / "w3.toml"
    policy_file.write_text(policy(analytics='["bob"]', offer='["public/*"]'))
    wait_for(lambda: "policy" in cluster.workers["w3"].log() and "reloaded" in
             cluster.workers["w3"].log(), what="the policy to reload")
    task_id = client.create_task(WageAvg(file="public/wages.csv").build())
    assert client.wait(task_id)
    assert ("worker w3 refused task 3: analytics from alice is not accepted by its policy "
            "([analytics] users)") in log_text(client, task_id)

    policy_file.write_text("[analytics]\nusers = 7\n")  # not a policy: the last good one stays
    wait_for(lambda: "the last good policy stays in force" in cluster.workers["w3"].log(),
             what="the bad policy to be refused")
    task_id = client.create_task(WageAvg(file="public/wages.csv").build())
    assert client.wait(task_id)
    assert "worker w3 refused task 4: analytics from alice" in log_text(client, task_id)


def test_a_worker_with_a_kit_needs_a_policy_and_can_write_one(tmp_path):
    cluster = LocalCluster(tmp_path)
    template = tmp_path / "policy.toml"
    for args, message in (
        (["worker", "--kit", str(cluster.kit("w1")), "--data-dir", str(tmp_path)],
         "a worker with a kit needs --policy FILE"),
        (["worker", "--write-policy", str(template)], f"wrote a policy template to {template}"),
        (["worker", "--write-policy", str(template)], "exists; it is left as it is"),
        (["worker", "--kit", str(cluster.kit("w1")), "--data-dir", str(tmp_path), "--policy",
          str(template)], "the policy has a [privacy] table: give --state-dir DIR"),
    ):
        daemon = Daemon(args, tmp_path / "daemon.log")
        daemon.process.wait(30)
        daemon.stop()
        assert message in daemon.log() and "Traceback" not in daemon.log(), daemon.log()
        (tmp_path / "daemon.log").unlink()
    assert template.read_text() == TEMPLATE
    written = Policy.parse(TEMPLATE)
    assert written == Policy(analytics_users=("role:analyst",), min_rows=3,
                             require_secure_aggregation=True, reveal_order_statistics=False,
                             learning_users=(), share_errors=True, offer=("*",),
                             privacy=Budgets())


def test_policy_files_that_cannot_be_used_say_why():
    for text, message in (
        ("[analytics\n", "not valid TOML"),
        ("[sharing]\n", "unknown table [sharing]"),
        ("[analytics]\nuser = []\n", "[analytics] has no key 'user'"),
        ("[analytics]\nmin_rows = true\n", "[analytics] min_rows must be a int"),
        ("[analytics]\nmin_rows = 0\n", "min_rows must be at least 1"),
        ("[learning]\nusers = [1]\n", "[learning] users must be a list of strings"),
        ("[analytics]\nmin_secagg_threshold = 0.4\n",
         "[analytics] min_secagg_threshold: secagg_threshold is the fraction f"),
        ("[analytics]\nmin_secagg_threshold = 1\n", "a number with 0.5 <= f < 1"),
    ):
        with pytest.raises(PolicyError, match=message.replace("[", r"\[").replace("]", r"\]")):
            Policy.parse(text)
    assert Policy(min_rows=None).effective_min_rows(None) == 3
    assert Policy(min_rows=None).effective_min_rows(1) == 1
    assert Policy(min_rows=5).effective_min_rows(None) == 5
    assert Policy(min_rows=5).effective_min_rows(8) == 8
    assert Policy(min_rows=5).effective_min_rows(2) == 5


def test_an_insecure_worker_without_a_policy_runs_analytics_but_no_learning_code(tmp_path):
    with LocalCluster(tmp_path, secure=False) as cluster:
        cluster.start_coordinator()
        for seed, name in enumerate(("w1", "w2")):
            np.savez(cluster.data_dir(name) / "train.npz", **regression_data(30, seed))
            cluster.start_worker(name, {"wages.csv": wages(10, seed)}, policy=None)
        client = cluster.client()
        assert client.wait(client.create_task(WageAvg().build()))
        canary = tmp_path / "canary"
        task_id = client.create_task(Canary(canary).build())
        assert client.wait(task_id) is False
        assert ("learning code from anonymous is not accepted by its policy"
                in log_text(client, task_id))
        assert not canary.exists()
        assert client.get_task(task_id).state == pb.TASK_STATE_ERROR


@pytest.mark.parametrize("share_errors", [True, False])
def test_errors_of_learning_code_are_cut_short_or_reduced_to_their_type(cluster, share_errors):
    cluster.start_coordinator()
    flag = str(share_errors).lower()
    text = f'[analytics]\nusers = ["*"]\n[learning]\nusers = ["*"]\nshare_errors = {flag}\n'
    for seed, name in enumerate(("w1", "w2")):
        np.savez(cluster.data_dir(name) / "train.npz", **regression_data(400, seed))
        cluster.start_worker(name, policy=text)
    client = cluster.client()
    task_id = client.create_task(Exfiltrating(max_rounds=1).build())
    assert client.wait(task_id) is False
    entries = [e.message for e in client.logs(task_id) if "worker w1" in e.message
               and "dropped" in e.message]
    assert entries, log_text(client, task_id)
    if share_errors:
        assert "RuntimeError: EXFIL:" in entries[0] and "(cut short)" in entries[0]
        assert len(entries[0]) < 2300
    else:
        assert "RuntimeError (this holder's policy shares no more of it" in entries[0]
        assert "EXFIL" not in log_text(client, task_id)
    assert "EXFIL" in cluster.workers["w1"].log()  # the holder's own log keeps it whole
