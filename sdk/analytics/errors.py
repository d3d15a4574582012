"""Errors of an analytics graph evaluated on a worker, composed so that they carry no row's value.

A library's message may quote the value it failed on (`invalid literal for int(): 'Brest'`), so
whatever leaves a worker is built here from the graph alone: the operation, its dtype
parameters, the names and dtypes of its input columns, and a reason chosen by the exception's type.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from sdk.analytics.graph import Node

_SYMBOLS = {"add": "+", "sub": "-", "mul": "*", "truediv": "/", "floordiv": "//", "mod": "%",
            "pow": "**", "lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!=",
            "and": "&", "or": "|", "xor": "^"}


class EvaluationError(ValueError):
    """An analytics task cannot be evaluated on a worker (an operation failed on its rows, say);
    the message is composed from the graph and names no value of a row."""


def compose(node: Node, args: list[Any], error: Exception) -> EvaluationError:
    """The error to send for `error`, raised by `node` on the evaluated `args`."""
    where = _columns(args)
    return EvaluationError(f"{_operation(node, args)}{' on ' + where if where else ''}: "
                           f"{_reason(node, args, error)}")


def _operation(node: Node, args: list[Any]) -> str:
    params = node.params
    if node.op == "method":
        keywords = dict(zip(params["keywords"], args[1:]))
        if params["name"] == "astype":
            return f"astype({_dtype_names(keywords.get('dtype'))})"
        return f"{params['name']}()"
    if node.op == "binary":
        return f"the operator {_SYMBOLS.get(params['op'], params['op'])}"
    if node.op == "unary":
        return params["op"]
    if node.op == "reduce":
        kind = params["kind"]
        return f"groupby().{kind.removeprefix('groupby_')}()" if kind.startswith("groupby_") \
            else f"{kind}()"
    if node.op == "getitem":
        return f"selecting {params['key']!r}"
    return node.op


def _reason(node: Node, args: list[Any], error: Exception) -> str:
    if node.op == "getitem" and isinstance(error, KeyError) and _is_table(args[0]):
        key = node.params["key"]
        wanted = list(key) if isinstance(key, (list, tuple)) else [key]
        missing = [k for k in wanted if k not in args[0].columns]
        return f"no column named {', '.join(map(repr, missing or wanted))}"
    if node.op == "method" and node.params["name"] == "astype" and \
            isinstance(error, (ValueError, TypeError, OverflowError)):
        dtype = dict(zip(node.params["keywords"], args[1:])).get("dtype")
        if _holds_text(args[0]) and _is_number(dtype):
            return "it holds text that is not a number"
        return f"it holds values that cannot be cast to {_dtype_names(dtype)}"
    if isinstance(error, ZeroDivisionError):
        return "it divides by zero"
    if isinstance(error, TypeError):
        return "the dtypes of its inputs do not support it"
    if isinstance(error, OverflowError):
        return "a value is out of the range of its dtype"
    return "the operation failed on this worker's rows"


def _columns(args: list[Any]) -> str:
    """The names and dtypes of the columns the operation was given (row values never)."""
    named = []
    for arg in args:
        if _is_table(arg):
            named += [f"{c} ({t})" for c, t in arg.dtypes.items()]
        elif isinstance(arg, pd.Series):
            named.append(f"{arg.name} ({arg.dtype})" if arg.name is not None
                         else f"a computed column ({arg.dtype})")
    if not named:
        return ""
    return f"column{'s' if len(named) > 1 else ''} {', '.join(named)}"


def _dtype_names(dtype: Any) -> str:
    """A dtype argument by its dtype names: a dtype, or a dict of them per column."""
    if isinstance(dtype, dict):
        return "{" + ", ".join(f"{k!r}: {_dtype_names(v)}" for k, v in dtype.items()) + "}"
    try:
        return str(pd.api.types.pandas_dtype(dtype))
    except (TypeError, ValueError):
        return "a dtype"


def _is_number(dtype: Any) -> bool:
    try:
        return pd.api.types.is_numeric_dtype(pd.api.types.pandas_dtype(dtype))
    except (TypeError, ValueError):
        return False


def _holds_text(data: Any) -> bool:
    dtypes = data.dtypes if _is_table(data) else [getattr(data, "dtype", None)]
    return any(pd.api.types.is_object_dtype(t) or pd.api.types.is_string_dtype(t)
               for t in dtypes if t is not None)


def _is_table(value: Any) -> bool:
    return isinstance(value, pd.DataFrame)
