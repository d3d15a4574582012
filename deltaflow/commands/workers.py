"""`deltaflow workers`: the workers connected now and the datasets they offer."""

from __future__ import annotations

import argparse

from deltaflow.commands.common import (OK, add_connection_arguments, open_client, print_json,
                                       print_table, when)
from sdk.proto import services_pb2 as pb


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("The workers connected now and the datasets they offer; admins also "
                          "see when each connected and the tasks it runs.")
    add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        workers = client.list_workers()
        admin = client.kit is None or client.kit.role == "admin"  # no kit: no identities
    if args.json:
        print_json(pb.ListWorkersResponse(workers=workers))
        return OK
    if admin:
        print_table(["NAME", "CONNECTED SINCE", "DATASETS", "TASKS RUNNING"], [
            [w.name, when(w.connected_at), ", ".join(w.datasets) or "-",
             ", ".join(map(str, w.running_tasks)) or "-"] for w in workers])
    else:
        print_table(["NAME", "DATASETS"],
                    [[w.name, ", ".join(w.datasets) or "-"] for w in workers])
    return OK
