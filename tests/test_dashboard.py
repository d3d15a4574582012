"""`deltaflow dashboard` against real daemons: its guard, by plain HTTP requests, and its page,
in headless Chromium (Debian's `chromium`, which scripts/setup.sh installs where it can)."""

from __future__ import annotations

import http.client
import json
import os
import re
import runpy
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cluster import log_text, wait_for

from deltaflow.localcluster import Daemon

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
ARTIFACTS = Path(os.environ.get("DELTAFLOW_ARTIFACTS", ROOT / "build" / "artifacts"))


class Board:
    """The dashboard's address and token, and plain HTTP requests to it."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.url = url
        self.host = parts.netloc
        self.port = parts.port
        self.token = parts.query.removeprefix("token=")

    def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                token: bool = True) -> tuple[int, dict, str]:
        """(status, headers, body); the token goes as the query's unless `headers` say."""
        if token:
            path += ("&" if "?" in path else "?") + f"token={self.token}"
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, headers={"Host": self.host, **(headers or {})})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read().decode()
        finally:
            connection.close()

    def api(self, path: str) -> dict:
        status, _, body = self.request("GET", path)
        assert status == 200, body
        return json.loads(body)


@pytest.fixture(scope="module")
def board(served):
    """Alice's dashboard of the shared cluster (see `cluster.served_cluster`)."""
    cluster, ids = served
    dashboard = Daemon(["dashboard", "--port", "0"], cluster.root / "dashboard.log",
                       {"DELTAFLOW_KIT": str(cluster.kit("alice")),
                        "DELTAFLOW_COORDINATOR": cluster.address})
    try:
        found = wait_for(lambda: re.search(r"open (http://\S+)\n", dashboard.log()),
                         what="the dashboard's URL")
        yield cluster, Board(found.group(1)), ids
    finally:
        dashboard.stop()


def chromium(*args: str) -> str:
    """Runs headless Chromium with a fresh profile; its stdout. Fails saying how to get it
    where it is missing."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    assert binary, ("the browser test needs Debian's chromium: run scripts/setup.sh (as root it "
                    "installs it) or `apt-get install chromium`")
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu",
                               "--disable-dev-shm-usage", "--no-first-run",
                               f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def dump(board: Board, fragment: str = "", budget_ms: int = 4000) -> str:
    """The page's DOM once its script has run for `budget_ms` of virtual time."""
    return chromium(f"--virtual-time-budget={budget_ms}", "--dump-dom", board.url + fragment)


def test_every_request_needs_the_token_its_own_host_and_its_own_origin(board):
    cluster, board, ids = board
    learning = ids["learning"]
    status, headers, page = board.request("GET", "/")
    assert status == 200 and f'content="{board.token}"' in page
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["Referrer-Policy"] == "no-referrer" and headers["X-Frame-Options"] == "DENY"

    # No token, a wrong one: refused, for the page, its files and the API alike.
    for path in ("/", "/static/app.js", f"/api/tasks/{learning}"):
        status, _, body = board.request("GET", path, token=False)
        assert status == 401 and "token" in json.loads(body)["error"], path
    status, _, _ = board.request("GET", f"/api/tasks?token={board.token[:-1]}x", token=False)
    assert status == 401
    # DNS rebinding: a page of evil.example resolved to 127.0.0.1 sends its own Host.
    status, _, body = board.request("GET", "/api/tasks", {"Host": f"evil.example:{board.port}"})
    assert status == 421 and "evil.example" in body
    # Another site's page: its Origin, or the browser's Sec-Fetch-Site, gives it away.
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}):
        status, _, _ = board.request("GET", "/api/tasks", headers)
        assert status == 403, headers
    # CSRF: a POST needs the token in a header and our Origin, not just a token in the query.
    own = {"Origin": f"http://127.0.0.1:{board.port}"}
    for headers in ({}, own, {"X-Deltaflow-Token": board.token}):
        status, _, _ = board.request("POST", f"/api/tasks/{learning}/cancel", headers)
        assert status == 403, headers
    # Only the page's own files; a path that climbs out of static/ finds nothing.
    assert board.request("GET", "/static/../server.py")[0] == 404
    assert board.request("GET", "/static/%2e%2e/server.py")[0] == 404
    # Another user's task is as absent as a missing one.
    with cluster.client("root") as root:
        wage_avg = runpy.run_path(str(EXAMPLES / "wage_avg.py"))["WageAvg"]
        theirs = root.create_task(wage_avg().build())
    assert board.request("GET", f"/api/tasks/{theirs}")[0] == 404
    assert board.request("GET", "/api/tasks/999999")[0] == 404


def test_api_serves_the_verbs_rows_and_cancels(board):
    cluster, board, ids = board
    learning = ids["learning"]
    listed = board.api("/api/tasks")["tasks"]
    assert [t["taskId"] for t in listed[:2]] == [str(ids["hostile"]), str(learning)]
    assert listed[1]["workers"] == ["w1", "w2"]
    assert board.api("/api/me") == {"user": "alice", "role": "analyst",
                                    "coordinator": cluster.address}
    assert [w["name"] for w in board.api("/api/workers")["workers"]] == ["w1", "w2", "w3"]
    rounds = board.api(f"/api/tasks/{learning}/metrics")["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3, 4, 5] and "mse" in rounds[0]
    # The log from an offset: what the page asks for as it follows it.
    whole = board.api(f"/api/tasks/{learning}/logs")["entries"]
    assert board.api(f"/api/tasks/{learning}/logs?from=3")["entries"] == whole[3:]

    # Cancel, as the page's script does it: a task that waits for a fourth worker.
    waiting = runpy.run_path(str(EXAMPLES / "wage_avg.py"))["WageAvg"]()
    waiting.min_clients = waiting.max_clients = 4
    waiting.connection_timeout = 60
    with cluster.client() as client:
        task_id = client.create_task(waiting.build())
        headers = {"Origin": f"http://127.0.0.1:{board.port}", "X-Deltaflow-Token": board.token}
        status, _, body = board.request("POST", f"/api/tasks/{task_id}/cancel", headers, False)
        assert status == 200 and json.loads(body)["state"] == "TASK_STATE_CANCELLED"
        assert "cancelled by alice" in log_text(client, task_id)
    status, _, body = board.request("POST", f"/api/tasks/{task_id}/cancel", headers, False)
    assert status == 409 and "already ended" in json.loads(body)["error"]


def test_page_in_a_browser_shows_tasks_log_plots_and_escapes_text(board):
    _, board, ids = board
    learning, hostile = ids["learning"], ids["hostile"]

    home = dump(board)
    assert "<title>deltaflow</title>" in home  # no script of the hostile name ran
    assert "alice (analyst) at " in home
    assert f'href="#/tasks/{learning}">regression</a>' in home
    assert "<td>w1, w2</td>" in home  # the learning task's workers
    assert re.search(r"<td>w1</td><td>regression\.npz, wages\.csv</td>", home), home
    # The hostile name is shown as text: escaped in the DOM, never an element.
    assert "&lt;script&gt;document.title=\"owned\"&lt;/script&gt;" in home
    assert "<img" not in home and "<script>document" not in home

    page = dump(board, f"#/tasks/{learning}")
    assert f"Task {learning}: regression" in page
    assert "min_clients=2, max_clients=3, wait_timeout=60s, connection_timeout=30s" in page
    assert "<dd>w1, w2</dd>" in page
    assert f"task {learning} finished\n" in page  # the log, to its end
    assert 'id="cancel" type="button" hidden=""' in page  # an ended task cannot be cancelled
    plot = re.search(r'<svg[^>]*data-metric="mse"[^>]*>.*?</svg>', page, re.DOTALL)
    assert plot and 'data-points="5"' in plot.group(0)
    assert plot.group(0).count("<circle") == 5  # one point per validated round
    assert len(re.search(r'<polyline[^>]*points="([^"]*)"', plot.group(0)).group(1).split()) == 5

    hostile_page = dump(board, f"#/tasks/{hostile}")
    assert f"Task {hostile}: &lt;img src=x onerror=" in hostile_page
    assert "created by alice (signed by alice): &lt;img" in hostile_page  # in the log too
    assert "<img" not in hostile_page and "<title>deltaflow</title>" in hostile_page

    # A screenshot of a learning task's page, kept as the test's artifact.
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    shot.unlink(missing_ok=True)
    chromium("--window-size=1280,1100", "--virtual-time-budget=4000", "--hide-scrollbars",
             f"--screenshot={shot}", board.url + f"#/tasks/{learning}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
