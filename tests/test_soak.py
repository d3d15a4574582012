"""The soak script for seconds: faults (a coordinator SIGKILL among them, by its seed) leave no
task stuck or lost and no wrong result; the ten-minute run stays out of the suite."""

from __future__ import annotations

import re
import subprocess
import sys

from cluster import ROOT


def test_a_short_soak_with_a_coordinator_kill_leaves_nothing_stuck_lost_or_wrong(tmp_path):
    # Seed 0 makes the one fault, about 3 s in, a coordinator SIGKILL and restart.
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "soak.py"), "--minutes", "0.25", "--workers", "2",
         "--seed", "0", "--fault-every", "6", "--coordinator-kills", "1", "--worker-faults", "0",
         "--settle", "90", "--root", str(tmp_path)],
        check=False, capture_output=True, text=True, timeout=240)
    table = dict(re.findall(r"^\| (.+?) +\| (.+) \|$", run.stdout, re.MULTILINE))
    assert run.returncode == 0, run.stdout + run.stderr
    assert table["fault: coordinator SIGKILL"] == "1", run.stdout
    assert int(table["tasks run (got an id)"]) > 0, run.stdout
    assert (table["stuck"], table["lost"], table["finished, result wrong"]) == ("0", "0", "0"), \
        run.stdout
    assert table["daemons stopped cleanly at the end"] == "yes", run.stdout
