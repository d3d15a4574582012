"""`deltaflow submit SCRIPT.py[:ClassName]`: build the task a script defines and submit it."""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType

from deltaflow.commands.common import (FAILED, OK, add_connection_arguments, fail, open_client,
                                       print_json, state_name)
from sdk.proto import services_pb2 as pb
from sdk.task import HorizontalAnalytics, HorizontalLearning

TASK_BASES = (HorizontalAnalytics, HorizontalLearning)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Import SCRIPT.py as a module (its __main__ block does not run), "
                          "instantiate its task class with no arguments, build it and submit "
                          "it; print the task's id.")
    parser.add_argument("script", metavar="SCRIPT.py[:ClassName]",
                        help="the script; ClassName when it defines several tasks")
    follow = parser.add_mutually_exclusive_group()
    follow.add_argument("--follow", action="store_true",
                        help="print the task's log until it ends")
    follow.add_argument("--wait", action="store_true", help="wait silently until it ends")
    add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    path, _, class_name = args.script.partition(":")
    task_class = find_task_class(load_script(Path(path)), class_name or None)
    built = task_class().build()
    with open_client(args) as client:
        task_id = client.create_task(built)
        if args.json:
            print_json(pb.CreateTaskResponse(task_id=task_id))
        else:
            print(task_id)
        if not (args.follow or args.wait):
            return OK
        if args.follow and not args.json:
            finished = client.trace(task_id)
        else:
            finished = client.wait(task_id)
        if not finished:
            info = client.get_task(task_id)
            reason = f": {info.error}" if info.error else ""
            fail("submit", f"task {task_id} ended {state_name(info.state)}{reason}")
            return FAILED
    return OK


def load_script(path: Path) -> ModuleType:
    """The script imported as a module of its own name (so a learning task's code travels by
    value); ValueError if it is not a Python file."""
    if path.suffix != ".py" or not path.is_file():
        raise ValueError(f"{path} is not a Python script (SCRIPT.py[:ClassName])")
    name = f"deltaflow_script_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(path.resolve().parent))  # the script's own imports beside it
    spec.loader.exec_module(module)
    return module


def task_classes(module: ModuleType) -> dict[str, type]:
    """The task classes the module itself defines, by name."""
    return {value.__name__: value for value in vars(module).values()
            if inspect.isclass(value) and issubclass(value, TASK_BASES)
            and value not in TASK_BASES and value.__module__ == module.__name__}


def find_task_class(module: ModuleType, name: str | None) -> type:
    """The task class `name` of the module, or its only one; ValueError listing the
    candidates otherwise."""
    candidates = task_classes(module)
    script = module.__file__
    if name is not None:
        if name not in candidates:
            raise ValueError(f"{script} defines no task class {name}; its task classes: "
                             f"{', '.join(sorted(candidates)) or 'none'}")
        return candidates[name]
    if len(candidates) != 1:
        found = ", ".join(sorted(candidates)) or "none"
        raise ValueError(f"{script} must define exactly one HorizontalAnalytics or "
                         f"HorizontalLearning subclass, or name one as SCRIPT.py:ClassName; "
                         f"it defines: {found}")
    return next(iter(candidates.values()))
