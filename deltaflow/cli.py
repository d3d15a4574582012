"""The `deltaflow` command: the coordinator and worker daemons, and provisioning."""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    from coordinator import server
    from deltaflow import provision
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
    provisioning = commands.add_parser("provision", help="make the federation's CA and kits")
    provision.add_arguments(provisioning)
    provisioning.set_defaults(run=provision.run)
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not inspect.iscoroutinefunction(args.run):
        return args.run(args)
    try:
        asyncio.run(args.run(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
