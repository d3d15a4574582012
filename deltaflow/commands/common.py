"""What every verb shares: its connection options, the Client, tables and JSON on stdout, and
errors as one sentence on stderr with an exit code (0 ok, 1 failed, 2 usage/refused/not found)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

import grpc
from google.protobuf.json_format import MessageToJson
from google.protobuf.message import Message

from sdk.client import Client, ClientError
from sdk.proto import services_pb2 as pb

OK, FAILED, REFUSED = 0, 1, 2

# Status codes that mean the request was wrong or not allowed, rather than that it failed.
_REFUSALS = {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED,
             grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT,
             grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS}


def add_connection_arguments(parser: argparse.ArgumentParser, json: bool = True) -> None:
    """--coordinator and --kit, and --json unless `json` is False."""
    parser.add_argument("--coordinator", metavar="ADDR",
                        help="HOST:PORT of the coordinator (else DELTAFLOW_COORDINATOR, the "
                             "config file's coordinator, the kit's)")
    parser.add_argument("--kit", metavar="DIR",
                        help="your user kit (else DELTAFLOW_KIT, the config file's kit)")
    if json:
        parser.add_argument("--json", action="store_true",
                            help="print JSON (protobuf's mapping) and nothing else on stdout")


def open_client(args: argparse.Namespace) -> Client:
    return Client(args.coordinator, kit=args.kit)


def task_id(text: str) -> int:
    """A task id argument: a positive integer."""
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"a task id is a positive integer, not {text!r}")
    return int(text)


def guarded(verb: str, run: Callable[[argparse.Namespace], int],
            args: argparse.Namespace) -> int:
    """Runs a verb; what goes wrong becomes one sentence on stderr and an exit code."""
    try:
        return run(args)
    except ClientError as error:
        message = str(error).removeprefix(f"{error.code.name}: ")
        fail(verb, f"{message} ({error.code.name})")
        return REFUSED if error.code in _REFUSALS else FAILED
    except ValueError as error:
        fail(verb, str(error))
        return REFUSED
    except OSError as error:
        fail(verb, str(error))
        return FAILED
    except KeyboardInterrupt:
        return 130


def fail(verb: str, message: str) -> None:
    print(f"deltaflow {verb}: {message}", file=sys.stderr)


def print_json(message: Message) -> None:
    print(MessageToJson(message, indent=2))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Columns padded to their widest cell; numbers right-aligned."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    right = [bool(rows) and all(isinstance(row[i], (int, float)) for row in rows)
             for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w)
                         for c, w, r in zip(row, widths, right)).rstrip()

    print(line(headers))
    for row in cells:
        print(line(row))


def state_name(state: int) -> str:
    return pb.TaskState.Name(state).removeprefix("TASK_STATE_")


def when(seconds: float) -> str:
    """Unix seconds as local time; "-" for none."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) if seconds else "-"


def took(info: pb.TaskInfo) -> str:
    """How long an ended task ran; "-" while it runs."""
    if not info.finished_at:
        return "-"
    seconds = int(info.finished_at - info.created_at)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
