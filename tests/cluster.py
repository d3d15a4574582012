"""Real daemons for tests, and the data they hold."""

from pathlib import Path

from deltaflow.localcluster import LocalCluster, wait_for  # noqa: F401 - for the tests
from deltaflow.samples import wages  # noqa: F401 - for the tests

ROOT = Path(__file__).resolve().parent.parent
