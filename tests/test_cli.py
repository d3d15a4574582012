"""The user's verbs of the `deltaflow` command, run as subprocesses against real daemons."""

from __future__ import annotations

import contextlib
import io
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import torch

from deltaflow import cli
from deltaflow.commands.submit import load_script, task_classes
from deltaflow.samples import regression, wages
from sdk.client import Client
from sdk.config import load_config
from sdk.progress import ProgressLine, parse_round

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
ANALYTICS_EXAMPLES = sorted(EXAMPLES.glob("analytics_*.py")) + [EXAMPLES / "wage_avg.py"]
LEARNING_EXAMPLE = EXAMPLES / "learning_regression.py"
TRACE_LINE = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  \S"

TWO_TASKS = '''
from sdk import dataset
from sdk.task import HorizontalAnalytics


class TooMany(HorizontalAnalytics):
    def __init__(self):
        super().__init__(name="too_many", min_clients=4, max_clients=4, wait_timeout=5,
                         connection_timeout=1)

    def dataset(self):
        return {"wages": dataset.DataFrame("wages.csv")}

    def execute(self, wages):
        return wages.mean()


class Other(TooMany):
    pass


if __name__ == "__main__":
    raise SystemExit("the __main__ block must not run")
'''


def deltaflow(cluster, *args: str, user: str = "alice", env: dict[str, str] | None = None,
              check: int | None = 0, real: bool = False) -> subprocess.CompletedProcess:
    """Runs `deltaflow ARGS` as `user`, in this process (`cli.main`, as the console script
    does), or as `python -m deltaflow` in a process of its own with `real`; asserts its exit
    code unless `check` is None."""
    environment = {"DELTAFLOW_KIT": str(cluster.kit(user)),
                   "DELTAFLOW_COORDINATOR": cluster.address, **(env or {})}
    if real:
        done = subprocess.run([sys.executable, "-m", "deltaflow", *args], cwd=ROOT,
                              env={**os.environ, **environment}, capture_output=True, text=True,
                              timeout=90)
    else:
        out, err = io.StringIO(), io.StringIO()
        with mock.patch.dict(os.environ, environment), contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            try:
                code = cli.main(list(args))
            except SystemExit as exit_:  # argparse's usage errors
                code = exit_.code if isinstance(exit_.code, int) else 2
        done = subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())
    if check is not None:
        assert done.returncode == check, (done.stdout, done.stderr)
    return done


def refused(done: subprocess.CompletedProcess, words: str) -> None:
    """Exit 2, one sentence on stderr with `words`, no traceback, nothing on stdout."""
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == ""
    assert words in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


# Without daemons ------------------------------------------------------------------------------

def test_parse_round_reads_the_coordinators_round_lines():
    done = parse_round("round 3/5: mse=0.4123 mae=0.3 from 3 workers")
    assert (done.number, done.max_rounds, done.metrics) == (3, 5, "mse=0.4123 mae=0.3")
    plain = parse_round("round 2/2: averaged 3 workers (195 training samples)")
    assert (plain.number, plain.max_rounds, plain.metrics) == (2, 2, "")
    assert parse_round("round 1: part of a dropped worker's upload had reached the sum") is None
    assert parse_round("selected 3 worker(s)") is None


def test_progress_line_estimates_the_time_left_from_the_rounds_done():
    out = io.StringIO()
    progress = ProgressLine(out)
    progress.show("line 1", 100.0, "selected 3 worker(s)")
    assert out.getvalue() == "\r\033[Kline 1\n"  # no round yet: no progress line
    progress.show("line 2", 110.0, "round 1/4: mse=2 from 3 workers")
    assert out.getvalue().endswith("line 2\nround 1/4  mse=2  elapsed 0:10  about 0:30 left")
    progress.show("line 3", 115.0, "worker w1 sent its weights")
    assert progress.render() == "round 1/4  mse=2  elapsed 0:15  about 0:30 left"
    progress.close()
    assert out.getvalue().endswith("\n")


def test_config_file_errors_say_what_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("DELTAFLOW_KIT", raising=False)
    monkeypatch.delenv("DELTAFLOW_COORDINATOR", raising=False)
    path = tmp_path / "deltaflow" / "config.toml"
    assert load_config() == {}
    path.parent.mkdir()
    path.write_text('coordinator = "127.0.0.1:6700"\nkit = \n')
    with pytest.raises(ValueError, match=r"config\.toml is not valid TOML: .*line 2.*fix that"):
        Client()
    path.write_text('coordinator = "127.0.0.1:6700"\nkits = "x"\n')
    with pytest.raises(ValueError, match="unknown key 'kits'; the keys are coordinator, kit"):
        Client()
    path.write_text("coordinator = 6700\n")
    with pytest.raises(ValueError, match="coordinator must be a non-empty string"):
        Client()
    path.write_text('coordinator = "127.0.0.1:6700"\n')
    assert Client().address == "127.0.0.1:6700"


def test_submit_names_the_task_classes_when_it_cannot_choose(tmp_path):
    script = tmp_path / "two.py"
    script.write_text(TWO_TASKS)
    env = {**os.environ, "DELTAFLOW_COORDINATOR": "127.0.0.1:1"}
    done = subprocess.run([sys.executable, "-m", "deltaflow", "submit", str(script)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    refused(done, "must define exactly one HorizontalAnalytics or HorizontalLearning "
                  "subclass, or name one as SCRIPT.py:ClassName; it defines: Other, TooMany")
    done = subprocess.run([sys.executable, "-m", "deltaflow", "submit", f"{script}:Nope"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    refused(done, "defines no task class Nope; its task classes: Other, TooMany")
    version = subprocess.run([sys.executable, "-m", "deltaflow", "--version"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert version.stdout.startswith("deltaflow 0.")


def test_every_federated_example_is_submitted_against_daemons():
    """The examples that define a task are those the verbs' tests below submit as they are, so
    a new example cannot go untried; each defines one, which `submit` takes without a name."""
    defining = {script: task_classes(load_script(script)) for script in EXAMPLES.glob("*.py")}
    federated = {script for script, classes in defining.items() if classes}
    assert federated == {*ANALYTICS_EXAMPLES, LEARNING_EXAMPLE}
    assert all(len(defining[script]) == 1 for script in federated)


def test_the_cli_reference_is_generated_from_the_current_help():
    render = runpy.run_path(str(ROOT / "scripts" / "gen_cli_docs.py"))["render"]
    assert (ROOT / "docs" / "cli.md").read_text() == render(), (
        "docs/cli.md is stale: run python scripts/gen_cli_docs.py")


def test_the_sdk_reference_is_generated_from_the_current_docstrings():
    render = runpy.run_path(str(ROOT / "scripts" / "gen_reference.py"))["render"]
    assert (ROOT / "docs" / "reference.md").read_text() == render(), (
        "docs/reference.md is stale: run python scripts/gen_reference.py")


# Against daemons ------------------------------------------------------------------------------

@pytest.mark.timeout(300)  # some forty runs of the command, each a new process
def test_analytics_verbs(cluster, tmp_path):
    cluster.start_coordinator()
    frames = [wages(30, seed) for seed in range(3)]
    for index, frame in enumerate(frames):
        cluster.start_worker(f"w{index + 1}", {"wages.csv": frame}, True, "--min-rows", "1")
    stacked = pd.concat(frames, ignore_index=True)

    ids = {}
    for script in ANALYTICS_EXAMPLES:  # every analytics example, submitted as it is
        done = deltaflow(cluster, "submit", str(script), "--wait")
        ids[script.stem] = int(done.stdout.strip())
    wage_avg = ids["wage_avg"]

    # --follow prints the log as plain lines (not a terminal); the id comes first.
    done = deltaflow(cluster, "submit", str(EXAMPLES / "wage_avg.py"), "--follow", real=True)
    first, *lines = done.stdout.splitlines()
    assert first.isdigit() and lines
    assert all(pd.Series(lines).str.match(TRACE_LINE)), lines
    assert lines[-1].endswith(f"task {first} finished")

    # A task that ends in ERROR: exit 1 with the reason; :ClassName picks one of two classes.
    script = tmp_path / "two.py"
    script.write_text(TWO_TASKS)
    done = deltaflow(cluster, "submit", f"{script}:TooMany", "--wait", check=1)
    assert "ended ERROR: only 3 eligible worker(s) came" in done.stderr
    failed = int(done.stdout)

    listed = deltaflow(cluster, "tasks").stdout.splitlines()
    assert listed[0].split() == ["ID", "NAME", "KIND", "STATE", "OWNER", "WORKERS", "CREATED",
                                 "TOOK"]
    assert listed[1].split()[:6] == [str(failed), "too_many", "analytics", "ERROR", "alice", "-"]
    assert listed[2].split()[4:6] == ["alice", "w1,w2,w3"]  # the --follow wage_avg
    assert len(listed) == 1 + len(ids) + 2
    reply = json.loads(deltaflow(cluster, "tasks", "--state", "error", "--json").stdout)
    assert [t["taskId"] for t in reply["tasks"]] == [str(failed)]
    assert len(json.loads(deltaflow(cluster, "tasks", "--limit", "2", "--json").stdout)["tasks"]) == 2

    status = deltaflow(cluster, "status", str(wage_avg)).stdout
    assert "state:    FINISHED" in status and "owner:    alice" in status
    assert json.loads(deltaflow(cluster, "status", str(wage_avg), "--json").stdout)["name"] == "wage_avg"

    log = deltaflow(cluster, "logs", str(wage_avg)).stdout.splitlines()
    assert log[-1].endswith(f"task {wage_avg} finished")
    assert deltaflow(cluster, "logs", str(wage_avg), "--from", "1").stdout.splitlines() == log[1:]
    entries = [json.loads(line) for line in
               deltaflow(cluster, "logs", str(wage_avg), "-f", "--json").stdout.splitlines()]
    assert [e["message"] for e in entries] == [line.split("  ", 1)[1] for line in log]

    # Results: printed as pandas prints them, and CSV and JSON that read back.
    expected = stacked.mean()
    assert deltaflow(cluster, "result", str(wage_avg)).stdout == f"{expected}\n"
    csv, as_json = tmp_path / "mean.csv", tmp_path / "mean.json"
    assert deltaflow(cluster, "result", str(wage_avg), "-o", str(csv)).stdout == ""
    pd.testing.assert_series_equal(pd.read_csv(csv, index_col=0).iloc[:, 0], expected,
                                   check_names=False)
    deltaflow(cluster, "result", str(wage_avg), "-o", str(as_json))
    back = pd.read_json(io.StringIO(as_json.read_text()), orient="split", typ="series")
    pd.testing.assert_series_equal(back, expected, check_names=False)
    several = json.loads(deltaflow(cluster, "result", str(ids["analytics_several_outputs"]),
                                   "--json").stdout)
    assert isinstance(several, (dict, list)) and several
    refused(deltaflow(cluster, "result", str(ids["analytics_several_outputs"]), "-o",
                      str(tmp_path / "x.csv"), check=None), "write it as JSON")
    refused(deltaflow(cluster, "result", str(wage_avg), "-o", str(tmp_path / "x.pt"),
                      check=None), "name a file ending in .csv or .json")
    refused(deltaflow(cluster, "result", str(failed), check=None), "has no result")

    # workers: analysts see names and datasets, admins also since when and what runs.
    analyst = deltaflow(cluster, "workers").stdout.splitlines()
    assert analyst == ["NAME  DATASETS", "w1    wages.csv", "w2    wages.csv", "w3    wages.csv"]
    admin = deltaflow(cluster, "workers", user="root").stdout.splitlines()
    assert admin[0].split("  ")[:2] == ["NAME", "CONNECTED SINCE"] and len(admin) == 4
    assert all(row.endswith("wages.csv  -") for row in admin[1:]), admin
    seen = json.loads(deltaflow(cluster, "workers", "--json").stdout)["workers"]
    assert seen[0] == {"name": "w1", "datasets": ["wages.csv"]}
    full = json.loads(deltaflow(cluster, "workers", "--json", user="root").stdout)["workers"]
    assert full[0]["connectedAt"] > 0

    # Refusals: one sentence, exit 2. Another user's task is as absent as a missing one.
    refused(deltaflow(cluster, "status", "999", check=None, real=True),
            "task 999 does not exist (NOT_FOUND)")
    refused(deltaflow(cluster, "status", str(wage_avg), "--json", user="bob", check=None),
            f"task {wage_avg} does not exist")
    refused(deltaflow(cluster, "cancel", str(wage_avg), check=None), "has already ended")

    # The config file is the last fallback, for the kit and the address.
    config = tmp_path / "xdg" / "deltaflow" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'coordinator = "{cluster.address}"\nkit = "{cluster.kit("root")}"\n')
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "DELTAFLOW_KIT": "",
           "DELTAFLOW_COORDINATOR": ""}
    assert deltaflow(cluster, "workers", env=env).stdout.startswith("NAME  CONNECTED SINCE")
    config.write_text("kit = [\n")
    refused(deltaflow(cluster, "tasks", env=env, check=None), "config.toml is not valid TOML")


@pytest.mark.timeout(300)
def test_learning_verbs(cluster, tmp_path):
    cluster.start_coordinator()
    for seed, name in enumerate(("w1", "w2")):
        np.savez(cluster.data_dir(name) / "regression.npz", **regression(40, seed))
        cluster.start_worker(name)

    done = deltaflow(cluster, "submit", str(LEARNING_EXAMPLE), "--follow")
    task_id, *lines = done.stdout.splitlines()
    assert any(line.endswith(" from 2 workers") and "round 5/5: mse=" in line for line in lines)
    assert "\r" not in done.stdout  # not a terminal: no progress line

    table = deltaflow(cluster, "metrics", task_id).stdout.splitlines()
    assert table[0].split() == ["ROUND", "WORKERS", "MSE"] and len(table) == 6
    assert table[5].split()[:2] == ["5", "2"]
    rounds = json.loads(deltaflow(cluster, "metrics", task_id, "--json").stdout)["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3, 4, 5] and "mse" in rounds[0]["metrics"]

    refused(deltaflow(cluster, "result", task_id, check=None), "-o model.pt")
    model = tmp_path / "model.pt"
    assert deltaflow(cluster, "result", task_id, "-o", str(model)).stdout == ""
    weights = torch.load(model)
    expected = cluster.client().get_result(int(task_id))
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[name], expected[name]) for name in expected)
    try:
        import safetensors  # noqa: F401
    except ImportError:
        refused(deltaflow(cluster, "result", task_id, "-o", str(tmp_path / "m.safetensors"),
                          check=None), "needs the safetensors package")
