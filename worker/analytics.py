"""An analytics task on a worker: its datasets read once, then the parts of each stage.

The task arrives as a graph of named operations and is evaluated with pandas; nothing the
submitter wrote is executed here. What leaves is only the additive parts of reductions.
"""

from __future__ import annotations

from typing import Any

from sdk import values
from sdk.analytics.errors import EvaluationError
from sdk.analytics.graph import Graph
from sdk.analytics.plan import Parts, Plan, worker_parts
from sdk.proto import task_pb2
from worker.datasets import DataDir


class AnalyticsJob:
    """A joined analytics task: its plan and this worker's frames."""

    def __init__(self, spec: task_pb2.TaskSpec, data_dir: DataDir, min_rows: int) -> None:
        try:
            self.plan = Plan(*Graph.from_proto(spec.analytics))
        except ValueError as error:  # composed from the graph alone
            raise EvaluationError(f"the task's graph is refused: {error}") from None
        self.frames = {ref.argument: data_dir.read_frame(ref.file) for ref in spec.datasets}
        self.min_rows = min_rows
        self.precision = spec.precision
        self.max_clients = spec.rules.max_clients
        self.min_clients = spec.rules.min_clients
        self.secure = spec.secure_aggregation

    def describe(self) -> str:
        return ", ".join(f"{name}: {len(frame)} rows" for name, frame in self.frames.items())

    def parts(self, stage: int, inputs: Any) -> Parts:
        """This worker's parts of the reductions of `stage`."""
        if not 0 <= stage < self.plan.stage_count:
            raise EvaluationError(f"the task has no step {stage + 1}")
        return worker_parts(self.plan, stage, self.frames, {int(k): v for k, v in inputs.items()},
                            self.min_rows)

    def compute(self, stage: int, inputs: Any) -> bytes:
        """This worker's parts of `stage`, serialized, for a task without secure aggregation."""
        return values.encode(self.parts(stage, inputs)).SerializeToString()
