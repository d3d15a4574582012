"""An analytics task on a worker: its datasets opened once, then the parts of each stage.

The task arrives as a graph of named operations and is evaluated with pandas (or pushed down to
a database as SQL); nothing the submitter wrote is executed here. What leaves is only the
additive parts of reductions.
"""

from __future__ import annotations

from typing import Any

from sdk import values
from sdk.analytics.errors import EvaluationError
from sdk.analytics.graph import Graph
from sdk.analytics.plan import Parts, Plan
from sdk.proto import task_pb2
from worker.chunks import stage_parts
from worker.sources import DEFAULT_CHUNK_ROWS, Catalog


class AnalyticsJob:
    """A joined analytics task: its plan and this worker's tables."""

    def __init__(self, spec: task_pb2.TaskSpec, catalog: Catalog, min_rows: int,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS) -> None:
        try:
            self.plan = Plan(*Graph.from_proto(spec.analytics))
        except ValueError as error:  # composed from the graph alone
            raise EvaluationError(f"the task's graph is refused: {error}") from None
        self.tables = {ref.argument: catalog.open(ref.file) for ref in spec.datasets}
        self.min_rows = min_rows
        self.chunk_rows = chunk_rows
        self.precision = spec.precision
        self.max_clients = spec.rules.max_clients
        self.min_clients = spec.rules.min_clients
        self.secure = spec.secure_aggregation

    def describe(self) -> str:
        return ", ".join(f"{name}: {type(table).__name__} {table.name!r}"
                         for name, table in self.tables.items())

    def parts(self, stage: int, inputs: Any) -> Parts:
        """This worker's parts of the reductions of `stage`."""
        if not 0 <= stage < self.plan.stage_count:
            raise EvaluationError(f"the task has no step {stage + 1}")
        return stage_parts(self.plan, stage, self.tables, {int(k): v for k, v in inputs.items()},
                           self.min_rows, self.chunk_rows)

    def compute(self, stage: int, inputs: Any) -> bytes:
        """This worker's parts of `stage`, serialized, for a task without secure aggregation."""
        return values.encode(self.parts(stage, inputs)).SerializeToString()
