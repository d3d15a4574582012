"""Real daemons for tests, and the data they hold."""

import runpy
from pathlib import Path

import numpy as np

from deltaflow.localcluster import LocalCluster, wait_for  # noqa: F401 - for the tests
from deltaflow.samples import regression, wages

ROOT = Path(__file__).resolve().parent.parent


def log_text(client, task_id: int) -> str:
    """A task's log so far, one message a line."""
    return "".join(entry.message + "\n" for entry in client.logs(task_id))


# A task name is its submitter's text: the dashboard shows it in the list, the title and the log.
HOSTILE_NAME = '<img src=x onerror="document.title=1"><script>document.title="owned"</script>'
# A holder that lets only root run analytics: alice's tasks are refused there.
ROOT_ONLY_POLICY = """\
[analytics]
users = ["root"]
require_secure_aggregation = false
"""


def served_cluster(root: Path) -> tuple[LocalCluster, dict[str, int]]:
    """A coordinator and workers w1, w2 (regression.npz, wages.csv) and w3 (wages.csv, root's
    analytics only), all serving /metrics, after alice ran a learning task and an analytics
    task named HOSTILE_NAME to their end; the cluster and those tasks' ids."""
    cluster = LocalCluster(root)
    try:
        cluster.start_coordinator(0, "--metrics-listen", "127.0.0.1:0")
        flags = ("--min-rows", "1", "--metrics-listen", "127.0.0.1:0")
        for seed, name in enumerate(("w1", "w2")):
            np.savez(cluster.data_dir(name) / "regression.npz", **regression(40, seed))
            cluster.start_worker(name, {"wages.csv": wages(20, seed)}, False, *flags)
        cluster.start_worker("w3", {"wages.csv": wages(20, 3)}, False, *flags,
                             policy=ROOT_ONLY_POLICY)
        for name in ("w1", "w2", "w3"):
            cluster.wait_connected(name)
        hostile = runpy.run_path(str(ROOT / "examples" / "wage_avg.py"))["WageAvg"]()
        hostile.name = HOSTILE_NAME
        learning = runpy.run_path(str(ROOT / "examples" / "learning_regression.py"))["Regression"]
        with cluster.client() as client:
            ids = {"learning": client.create_task(learning().build()),
                   "hostile": client.create_task(hostile.build())}
            assert all(client.wait(task_id) for task_id in ids.values())
    except BaseException:
        cluster.stop()
        raise
    return cluster, ids
