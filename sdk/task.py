"""Task authoring: what a user subclasses, and the built task that `create_task` ships."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from sdk import dataset, pandas
from sdk.analytics.graph import Graph
from sdk.analytics.plan import Plan
from sdk.proto import task_pb2

FORMAT_VERSION = 1


class TaskError(ValueError):
    """A task that cannot be built: the message says what to change."""


@dataclass(frozen=True)
class BuiltTask:
    """A validated task as data, ready for `Client.create_task`."""

    spec: task_pb2.TaskSpec

    @property
    def name(self) -> str:
        return self.spec.name

    def serialize(self) -> bytes:
        return self.spec.SerializeToString()


def check_rules(name: str, min_clients: int, max_clients: int, wait_timeout: float,
                connection_timeout: float) -> task_pb2.RoundRules:
    """The four round rules, or TaskError naming the one that is wrong."""
    if not isinstance(name, str) or not name.strip():
        raise TaskError("a task needs a non-empty name")
    if not isinstance(min_clients, int) or min_clients < 2:
        raise TaskError(f"min_clients must be an integer of at least 2, not {min_clients!r}: "
                        "with one client its data would be the result")
    if not isinstance(max_clients, int) or max_clients < min_clients:
        raise TaskError(f"max_clients ({max_clients!r}) must be an integer >= min_clients ({min_clients})")
    for label, value in (("wait_timeout", wait_timeout), ("connection_timeout", connection_timeout)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            raise TaskError(f"{label} must be a positive number of seconds, not {value!r}")
    return task_pb2.RoundRules(min_clients=min_clients, max_clients=max_clients,
                               wait_timeout=float(wait_timeout),
                               connection_timeout=float(connection_timeout))


class HorizontalAnalytics:
    """Statistics over every holder's rows, as if stacked; only aggregates leave a holder.

    Subclasses implement `dataset()` and `execute(**frames)` with `sdk.pandas`.
    """

    def __init__(self, name: str, min_clients: int = 2, max_clients: int = 2,
                 wait_timeout: float = 60, connection_timeout: float = 60) -> None:
        self.name = name
        self.min_clients = min_clients
        self.max_clients = max_clients
        self.wait_timeout = wait_timeout
        self.connection_timeout = connection_timeout

    def dataset(self) -> dict[str, dataset.DataFrame]:
        raise NotImplementedError("implement dataset(): {argument name: dataset.DataFrame(file)}")

    def execute(self, **frames: pandas.DataFrame) -> Any:
        raise NotImplementedError("implement execute(): the statistics to compute")

    def build(self) -> BuiltTask:
        """Validates the task and records `execute` as a graph of operations."""
        rules = check_rules(self.name, self.min_clients, self.max_clients, self.wait_timeout,
                            self.connection_timeout)
        datasets = self.dataset()
        if not isinstance(datasets, dict) or not datasets:
            raise TaskError("dataset() must return a non-empty dict of {argument: dataset.DataFrame}")
        parameters = list(inspect.signature(self.execute).parameters)
        if sorted(parameters) != sorted(datasets):
            raise TaskError(f"execute() takes {parameters} but dataset() names {list(datasets)}: "
                            "they must match")
        graph = Graph()
        frames = {}
        for argument, data in datasets.items():
            if not isinstance(data, dataset.DataFrame):
                raise TaskError(f"dataset {argument!r} must be a dataset.DataFrame, not {type(data).__name__}")
            frames[argument] = pandas.DataFrame(graph, graph.add("source", argument=argument), True)
        output = _record_output(graph, self.execute(**frames))
        try:
            Plan(graph, output)
        except ValueError as error:
            raise TaskError(str(error)) from None
        return BuiltTask(task_pb2.TaskSpec(
            format_version=FORMAT_VERSION,
            name=self.name,
            kind=task_pb2.TASK_KIND_ANALYTICS,
            rules=rules,
            datasets=[task_pb2.DatasetRef(argument=a, file=d.name) for a, d in datasets.items()],
            analytics=graph.to_proto(output),
        ))


def _record_output(graph: Graph, value: Any) -> Any:
    """The output nest of node ids for what `execute` returned."""
    if isinstance(value, pandas._Lazy):
        if value._rows:
            raise TaskError("execute() must return aggregates (sum, mean, count...), "
                            "not row-level data: rows never leave a holder")
        return value._node
    if isinstance(value, (tuple, list)):
        return type(value)(_record_output(graph, v) for v in value)
    if isinstance(value, dict):
        return {k: _record_output(graph, v) for k, v in value.items()}
    return graph.add("const", value=value)
