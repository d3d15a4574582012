"""The /metrics endpoint both daemons can serve (`--metrics-listen`), for Prometheus."""

from __future__ import annotations

import argparse

from prometheus_client import CollectorRegistry, start_http_server


def add_metrics_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics-listen", metavar="[HOST:]PORT", default=None,
                        help="serve Prometheus metrics at http://HOST:PORT/metrics (HOST "
                             "defaults to 127.0.0.1; PORT 0: any free one); off by default")


def serve_metrics(listen: str, registry: CollectorRegistry) -> str:
    """Serves `registry` on `listen` in a daemon thread of its own; its URL. SystemExit saying
    what to fix when it cannot listen there."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit():
        raise SystemExit(f"--metrics-listen {listen}: give [HOST:]PORT, like 127.0.0.1:9100")
    try:
        server, _ = start_http_server(int(port), host, registry)
    except OSError as error:
        raise SystemExit(f"--metrics-listen: cannot listen on {host}:{port} "
                         f"({error.strerror})") from None
    return f"http://{host}:{server.server_port}/metrics"
