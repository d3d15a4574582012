"""The `deltaflow` command: `deltaflow coordinator ...` and `deltaflow worker ...`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    from coordinator import server
    from worker import daemon

    parser = argparse.ArgumentParser(
        prog="deltaflow", description="Federated analytics and learning daemons."
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True)
    coordinator = commands.add_parser("coordinator", help="run the coordinator daemon")
    server.add_arguments(coordinator)
    coordinator.set_defaults(run=server.serve)
    worker = commands.add_parser("worker", help="run a worker daemon on a data holder")
    daemon.add_arguments(worker)
    worker.set_defaults(run=daemon.serve)
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        asyncio.run(args.run(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
