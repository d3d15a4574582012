"""`deltaflow status ID`: one task's state, rules, datasets and error."""

from __future__ import annotations

import argparse

from deltaflow.commands.common import (OK, add_connection_arguments, open_client, print_json,
                                       state_name, task_id, took, when)
from deltaflow.commands.tasks import kind_name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "A task's state, owner, times, rules, datasets and error."
    parser.add_argument("task_id", type=task_id, metavar="ID")
    add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        info = client.get_task(args.task_id)
    if args.json:
        print_json(info)
        return OK
    rules = info.rules
    rows = [
        ("task", f"{info.task_id} {info.name}"), ("kind", kind_name(info.kind)),
        ("state", state_name(info.state)), ("owner", info.owner),
        ("created", when(info.created_at)), ("finished", when(info.finished_at)),
        ("took", took(info)),
        ("workers", f"{rules.min_clients} to {rules.max_clients}"),
        ("datasets", ", ".join(f"{d.argument}={d.file}" for d in info.datasets)),
        ("log", f"{info.log_length} lines (deltaflow logs {info.task_id})"),
    ]
    if info.error:
        rows.append(("error", info.error))
    for key, value in rows:
        print(f"{key + ':':<10}{value}")
    return OK
