"""`deltaflow tasks`: the tasks the caller may see, newest first."""

from __future__ import annotations

import argparse

from deltaflow.commands.common import (OK, add_connection_arguments, open_client, print_json,
                                       print_table, state_name, took, when)
from sdk.proto import services_pb2 as pb
from sdk.proto import task_pb2

STATES = [name.removeprefix("TASK_STATE_") for name in pb.TaskState.keys()][1:]
MAX_LISTED = 1000  # the most the coordinator lists in one call


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "The tasks you may see (an admin: everyone's), newest first."
    parser.add_argument("--state", type=str.upper, choices=STATES, metavar="STATE",
                        help=f"only tasks in this state: {', '.join(STATES)}")
    parser.add_argument("--limit", type=int, default=20, metavar="N",
                        help="at most N tasks (default 20)")
    add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        # The coordinator filters by owner only: with --state, look further back.
        tasks = client.list_tasks(MAX_LISTED if args.state else args.limit)
    if args.state:
        tasks = [t for t in tasks if state_name(t.state) == args.state][:args.limit]
    if args.json:
        print_json(pb.ListTasksResponse(tasks=tasks))
        return OK
    print_table(["ID", "NAME", "KIND", "STATE", "OWNER", "WORKERS", "CREATED", "TOOK"], [
        [t.task_id, t.name, kind_name(t.kind), state_name(t.state), t.owner,
         ",".join(t.workers) or "-", when(t.created_at), took(t)] for t in tasks])
    return OK


def kind_name(kind: int) -> str:
    return task_pb2.TaskKind.Name(kind).removeprefix("TASK_KIND_").lower()
