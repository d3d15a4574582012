"""`deltaflow metrics ID`: a learning task's validation metrics, round by round."""

from __future__ import annotations

import argparse

from deltaflow.commands.common import (OK, add_connection_arguments, open_client, print_json,
                                       print_table, task_id)
from sdk.proto import services_pb2 as pb


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("A learning task's metrics, averaged over its workers, for each "
                          "round that validated.")
    parser.add_argument("task_id", type=task_id, metavar="ID")
    add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        rounds = client.get_metrics(args.task_id)
    if args.json:
        print_json(pb.GetMetricsResponse(rounds=[
            pb.RoundMetrics(round=r.pop("round"), workers=r.pop("workers"), metrics=r)
            for r in rounds]))
        return OK
    names = sorted({name for r in rounds for name in r} - {"round", "workers"})
    print_table(["ROUND", "WORKERS", *(name.upper() for name in names)], [
        [r["round"], r["workers"], *(f"{r[n]:.6g}" if n in r else "-" for n in names)]
        for r in rounds])
    return OK
