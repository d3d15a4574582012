"""A check for a machine with an NVIDIA GPU (not part of the suite): the worker's NVML inventory,
then FedAvg over two real workers (mutual TLS, warm template) whose engines train on the GPU,
secure and plain. It prints, for each worker, the devices its rounds trained on and whether its
task processes were forked from the warm template; the cluster's logs stay under $OUT/c.

    OUT=/tmp/gpu python scripts/gpu_check.py

Seen on an H200 (session 6): both workers listed cuda:0 NVIDIA H200, trained every round on
cuda:0 in task processes forked from the warm template, and both tasks finished.
"""
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, "examples")
from deltaflow.localcluster import LocalCluster  # noqa: E402
from deltaflow.samples import regression  # noqa: E402
from learning_regression import Regression  # noqa: E402
from worker.engine.gpu import NvmlInventory  # noqa: E402

print("inventory:", NvmlInventory().devices(), flush=True)
root = Path(os.environ.get("OUT", "gpu-check")) / "c"
with LocalCluster(root, warm_start=True) as cluster:
    cluster.start_coordinator()
    for i, name in enumerate(("w1", "w2")):
        np.savez(cluster.data_dir(name) / "regression.npz", **regression(400, i))
        cluster.start_worker(name)
    client = cluster.client()
    for secure in (True, False):
        task = Regression()
        task.secure_aggregation = secure
        started = time.time()
        task_id = client.create_task(task.build())
        ok = client.wait(task_id)
        print(f"task {task_id} secure={secure}: finished={ok} in {time.time() - started:.1f} s",
              client.get_task(task_id).error, flush=True)
        print("\n".join(e.message for e in client.logs(task_id)[-4:]), flush=True)
    for name in ("w1", "w2"):
        log = cluster.workers[name].log()
        print(name, sorted(set(re.findall(r"trained on (\S+)", log))),
              re.findall(r"engine: .*", log)[:1], re.findall(r"forked from the warm template[^\n]*", log)[:1],
              flush=True)
