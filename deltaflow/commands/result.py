"""`deltaflow result ID [-o FILE]`: a finished task's result, printed or saved."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deltaflow.commands.common import OK, add_connection_arguments, open_client, task_id
from sdk.proto import task_pb2

ANALYTICS_FORMATS = (".csv", ".json")
LEARNING_FORMATS = (".pt", ".safetensors")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("An analytics result printed as pandas prints it, or saved as CSV "
                          "or JSON; a learning result (the global weights) saved as a .pt "
                          "state dict (torch.load) or .safetensors.")
    parser.add_argument("task_id", type=task_id, metavar="ID")
    parser.add_argument("-o", "--output", type=Path, metavar="FILE",
                        help="write it to FILE: .csv or .json (analytics), .pt or .safetensors "
                             "(learning)")
    add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        learning = client.get_task(args.task_id).kind == task_pb2.TASK_KIND_LEARNING
        if learning and args.output is None:
            raise ValueError(f"task {args.task_id} trained a model: give a file for its weights, "
                             f"-o model.pt (or model.safetensors)")
        _check_suffix(args.output, LEARNING_FORMATS if learning else ANALYTICS_FORMATS)
        result = client.get_result(args.task_id)
    if learning:
        save_weights(result, args.output)
    elif args.output is not None:
        save_analytics(result, args.output)
    elif args.json:
        print(json.dumps(jsonable(result), indent=2))
    else:
        print(text(result))
    return OK


def _check_suffix(path: Path | None, formats: tuple[str, ...]) -> None:
    if path is not None and path.suffix not in formats:
        raise ValueError(f"cannot write this result as {path.name}: name a file ending in "
                         f"{' or '.join(formats)}")


def text(result: Any) -> str:
    """The result as pandas prints it; several outputs one after another, under their names."""
    if isinstance(result, dict):
        return "\n\n".join(f"{key}:\n{value}" for key, value in result.items())
    if isinstance(result, (list, tuple)):
        return "\n\n".join(f"[{index}]:\n{value}" for index, value in enumerate(result))
    return str(result)


def jsonable(result: Any) -> Any:
    """The result in JSON's terms: a table as pandas' "split" orientation (columns, index,
    data; `pd.read_json(..., orient="split")` reads it back), a series as "split" too (name,
    index, data), a number as a number (NaN as null)."""
    if isinstance(result, (pd.DataFrame, pd.Series)):
        return json.loads(result.to_json(orient="split"))
    if isinstance(result, dict):
        return {str(key): jsonable(value) for key, value in result.items()}
    if isinstance(result, (list, tuple)):
        return [jsonable(value) for value in result]
    if isinstance(result, np.generic):
        result = result.item()
    if isinstance(result, float) and not math.isfinite(result):
        return None
    return result


def save_analytics(result: Any, path: Path) -> None:
    if path.suffix == ".json":
        path.write_text(json.dumps(jsonable(result), indent=2) + "\n")
        return
    if isinstance(result, pd.DataFrame):
        result.to_csv(path)
    elif isinstance(result, pd.Series):
        result.to_frame().to_csv(path)
    elif isinstance(result, (dict, list, tuple)):
        raise ValueError("this result has several outputs, which one CSV table cannot hold: "
                         "write it as JSON (-o result.json)")
    else:
        pd.DataFrame({"value": [jsonable(result)]}).to_csv(path, index=False)


def save_weights(state: dict[str, Any], path: Path) -> None:
    if path.suffix == ".pt":
        import torch

        torch.save(state, path)
        return
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise ValueError("writing .safetensors needs the safetensors package "
                         "(pip install safetensors); or write -o model.pt") from None
    save_file({name: tensor.contiguous() for name, tensor in state.items()}, str(path))
