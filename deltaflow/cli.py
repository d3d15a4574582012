"""The `deltaflow` command: the coordinator and worker daemons, provisioning, and the user's
verbs (deltaflow/commands/). Only the module of the command given is imported, so that a daemon
or a verb starts without loading the others."""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import inspect
import logging
import sys
from importlib.metadata import version

# Each command: the module with its add_arguments and its run (serve, for daemons), and a summary.
DAEMONS = {
    "coordinator": ("coordinator.server", "serve", "run the coordinator daemon"),
    "worker": ("worker.daemon", "serve", "run a worker daemon on a data holder"),
    "provision": ("deltaflow.provision", "run", "make the federation's CA and kits"),
}
VERBS = {
    "submit": "build a task script's task and submit it",
    "tasks": "list your tasks, newest first",
    "status": "show one task",
    "logs": "print a task's log (-f: until it ends)",
    "result": "print or save a finished task's result",
    "cancel": "cancel a task",
    "metrics": "a learning task's metrics by round",
    "workers": "the workers connected now",
    "dashboard": "a local web page of your tasks, logs, metrics and the workers",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_command(argv)).parse_args(argv)

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


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The command's parser, with the arguments of `chosen` only (the others' modules are not
    imported), or of every command when `chosen` is none of them."""
    parser = argparse.ArgumentParser(
        prog="deltaflow", description="Federated analytics and learning: daemons and verbs."
    )
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {version('deltaflow')}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True)
    wanted = {chosen} if chosen in DAEMONS or chosen in VERBS else {*DAEMONS, *VERBS}
    for name, (module_name, run, summary) in DAEMONS.items():
        command = commands.add_parser(name, help=summary)
        if name in wanted:
            module = importlib.import_module(module_name)
            module.add_arguments(command)
            command.set_defaults(run=getattr(module, run))
    for verb, summary in VERBS.items():
        command = commands.add_parser(verb, help=summary)
        if verb in wanted:
            common = importlib.import_module("deltaflow.commands.common")
            module = importlib.import_module(f"deltaflow.commands.{verb}")
            module.add_arguments(command)
            command.set_defaults(run=functools.partial(common.guarded, verb, module.run))
    return parser


def _command(argv: list[str]) -> str | None:
    """The command word of `argv`: its first word that is neither an option nor the value of
    --log-level."""
    words = iter(argv)
    for word in words:
        if word == "--log-level":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


if __name__ == "__main__":
    sys.exit(main())
