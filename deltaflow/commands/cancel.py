"""`deltaflow cancel ID`: stop a pending or running task."""

from __future__ import annotations

import argparse

from deltaflow.commands.common import (OK, add_connection_arguments, open_client, print_json,
                                       state_name, task_id)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Cancel a pending or running task (yours; an admin: anyone's)."
    parser.add_argument("task_id", type=task_id, metavar="ID")
    add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        info = client.cancel_task(args.task_id)
    if args.json:
        print_json(info)
    else:
        print(f"task {info.task_id} {state_name(info.state)}")
    return OK
