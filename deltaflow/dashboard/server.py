"""The dashboard's HTTP server: its page and static files, and a small JSON API over the user's
`Client` (the same rows as `deltaflow tasks`, `logs`, `metrics`, `workers`, `cancel --json`).

Every request passes `guard.Guard` first. Every response forbids framing, sniffing, referrers,
caching, and any script or style not served from here (Content-Security-Policy); the page
itself only ever puts text into the document as text.
"""

from __future__ import annotations

import json
import re
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
from google.protobuf.json_format import MessageToDict

from deltaflow.dashboard.guard import Guard, Refused
from sdk.client import Client, ClientError
from sdk.proto import services_pb2 as pb

STATIC = resources.files("deltaflow.dashboard") / "static"
FILES = {"app.js": "text/javascript", "plot.js": "text/javascript", "style.css": "text/css"}
TASKS_LISTED = 100  # the newest tasks the list shows

HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; "
                                "img-src 'self'; connect-src 'self'; base-uri 'none'; "
                                "form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

# A gRPC refusal as the HTTP status the page gets.
_STATUSES = {grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.PERMISSION_DENIED: 403,
             grpc.StatusCode.UNAUTHENTICATED: 403, grpc.StatusCode.FAILED_PRECONDITION: 409,
             grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.UNAVAILABLE: 502}

_TASK_PATH = re.compile(r"^/api/tasks/([1-9][0-9]{0,18})(/logs|/metrics|/cancel)?$")


class Dashboard(ThreadingHTTPServer):
    """Serves the dashboard on 127.0.0.1:`port` (0: any free port) for `client`'s user."""

    daemon_threads = True

    def __init__(self, client: Client, port: int, token: str) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.client = client
        self.guard = Guard(self.server_port, token)
        self.url = f"http://127.0.0.1:{self.server_port}/?token={token}"


class _Handler(BaseHTTPRequestHandler):
    server: Dashboard
    server_version = "deltaflow-dashboard"
    sys_version = ""

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the URL carries the token: no request is written to the terminal

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        try:
            self.server.guard.check(method, self.headers, (query.get("token") or [None])[0])
            if method == "GET" and url.path == "/":
                self._send(200, "text/html; charset=utf-8", self._page())
            elif method == "GET" and url.path.startswith("/static/"):
                name = url.path.removeprefix("/static/")
                if name not in FILES:
                    raise Refused(404, f"no file {name[:100]!r}")
                self._send(200, f"{FILES[name]}; charset=utf-8", (STATIC / name).read_bytes())
            elif url.path.startswith("/api/"):
                self._json(200, self._api(method, url.path, query))
            else:
                raise Refused(404, "no such page")
        except Refused as refusal:
            self._json(refusal.status, {"error": str(refusal)})
        except ClientError as error:
            self._json(_STATUSES.get(error.code, 500), {"error": str(error)})

    def _page(self) -> bytes:
        """index.html with the token in place (it is URL-safe base64: nothing to escape)."""
        page = (STATIC / "index.html").read_text()
        return page.replace("{{token}}", self.server.guard.token).encode()

    def _api(self, method: str, path: str, query: dict[str, list[str]]) -> Any:
        client = self.server.client
        if method == "GET" and path == "/api/me":
            user, role = whoami(client)
            return {"user": user, "role": role, "coordinator": client.address}
        if method == "GET" and path == "/api/tasks":
            return _dict(pb.ListTasksResponse(tasks=client.list_tasks(TASKS_LISTED)))
        if method == "GET" and path == "/api/workers":
            return _dict(pb.ListWorkersResponse(workers=client.list_workers()))
        found = _TASK_PATH.match(path)
        if found is None:
            raise Refused(404, "no such API path")
        task_id, action = int(found.group(1)), found.group(2)
        if method == "POST" and action == "/cancel":
            return _dict(client.cancel_task(task_id))
        if method != "GET" or action == "/cancel":
            raise Refused(405, f"{path} takes no {method}")
        if action == "/logs":
            offset = (query.get("from") or ["0"])[0]
            if not offset.isdigit():
                raise Refused(400, "from= is a log offset, a whole number")
            entries = client.logs(task_id, int(offset))
            return {"entries": [_dict(entry) for entry in entries]}
        if action == "/metrics":
            return {"rounds": client.get_metrics(task_id)}
        return _dict(client.get_task(task_id))

    def _json(self, status: int, body: Any) -> None:
        self._send(status, "application/json", json.dumps(body).encode())

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def whoami(client: Client) -> tuple[str, str]:
    """The user the dashboard acts as, and their role (no kit: no identities, all allowed)."""
    return (client.kit.name, client.kit.role) if client.kit else ("anonymous", "admin")


def _dict(message: Any) -> dict[str, Any]:
    """protobuf's JSON mapping of a message, as `--json` prints it."""
    return MessageToDict(message)
