"""The `deltaflow` command: the coordinator and worker daemons, provisioning, and the user's
verbs (deltaflow/commands/)."""

from __future__ import annotations

import argparse
import asyncio
import functools
import inspect
import logging
import sys
from importlib.metadata import version


def main(argv: list[str] | None = None) -> int:
    from coordinator import server
    from deltaflow import provision
    from deltaflow.commands import (cancel, common, logs, metrics, result, status, submit,
                                    tasks, workers)
    from worker import daemon

    parser = argparse.ArgumentParser(
        prog="deltaflow", description="Federated analytics and learning: daemons and verbs."
    )
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {version('deltaflow')}")
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
    verbs = {
        "submit": (submit, "build a task script's task and submit it"),
        "tasks": (tasks, "list your tasks, newest first"),
        "status": (status, "show one task"),
        "logs": (logs, "print a task's log (-f: until it ends)"),
        "result": (result, "print or save a finished task's result"),
        "cancel": (cancel, "cancel a task"),
        "metrics": (metrics, "a learning task's metrics by round"),
        "workers": (workers, "the workers connected now"),
    }
    for verb, (module, summary) in verbs.items():
        verb_parser = commands.add_parser(verb, help=summary)
        module.add_arguments(verb_parser)
        verb_parser.set_defaults(run=functools.partial(common.guarded, verb, module.run))
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
