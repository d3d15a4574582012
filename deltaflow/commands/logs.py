"""`deltaflow logs ID`: a task's log, or with -f its log until the task ends."""

from __future__ import annotations

import argparse
import sys

from google.protobuf.json_format import MessageToJson

from deltaflow.commands.common import (FAILED, OK, add_connection_arguments, open_client,
                                       task_id)
from sdk.client import log_line
from sdk.proto import services_pb2 as pb


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("A task's log so far; with -f, until the task ends (on a terminal, "
                          "with a learning task's progress). --json prints one LogEntry per line.")
    parser.add_argument("task_id", type=task_id, metavar="ID")
    parser.add_argument("-f", "--follow", action="store_true",
                        help="keep printing until the task ends; exit 1 unless it finished")
    parser.add_argument("--from", dest="offset", type=int, default=0, metavar="N",
                        help="start at entry N (default 0)")
    add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    def show(entry: pb.LogEntry) -> None:
        print(MessageToJson(entry, indent=None), flush=True)

    with open_client(args) as client:
        if args.follow:
            finished = (client.follow(args.task_id, show, args.offset) if args.json
                        else client.trace(args.task_id, sys.stdout, args.offset))
            return OK if finished else FAILED
        for entry in client.logs(args.task_id, args.offset):
            print(MessageToJson(entry, indent=None) if args.json else log_line(entry))
    return OK
