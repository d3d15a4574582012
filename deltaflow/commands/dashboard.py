"""`deltaflow dashboard`: a local web page of your tasks, their logs and metrics, and the
workers, served on 127.0.0.1 until Ctrl-C."""

from __future__ import annotations

import argparse
import secrets
import signal

from deltaflow.commands.common import OK, add_connection_arguments, open_client
from deltaflow.dashboard.server import Dashboard, whoami


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Serve a web page of your tasks (live), each task's log, rules, workers and metrics "
        "plotted by round, the workers, and a cancel button, at http://127.0.0.1:PORT/. It acts "
        "with your kit, so it listens on loopback only, and every request must carry the random "
        "token of the URL it prints.")
    parser.add_argument("--port", type=int, default=8765,
                        help="the local port (default %(default)s; 0: any free one)")
    add_connection_arguments(parser, json=False)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        try:
            dashboard = Dashboard(client, args.port, secrets.token_urlsafe(24))
        except OSError as error:
            raise OSError(f"cannot listen on 127.0.0.1:{args.port} ({error.strerror}): "
                          "choose another --port") from None
        user, role = whoami(client)
        print(f"deltaflow dashboard of {user} ({role}) at {client.address}: open {dashboard.url}",
              flush=True)
        signal.signal(signal.SIGTERM, _interrupt)  # a service manager's stop: as Ctrl-C
        try:
            dashboard.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            dashboard.server_close()
    return OK
