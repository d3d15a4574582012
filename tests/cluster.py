"""Real daemons for tests, and the data they hold."""

from pathlib import Path

from deltaflow.localcluster import LocalCluster, wait_for  # noqa: F401 - for the tests
from deltaflow.samples import wages  # noqa: F401 - for the tests

ROOT = Path(__file__).resolve().parent.parent


def log_text(client, task_id: int) -> str:
    """A task's log so far, one message a line."""
    return "".join(entry.message + "\n" for entry in client.logs(task_id))
