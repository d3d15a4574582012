"""The engine task serving a federated learning task, as the worker daemon builds it.

It is light: the daemon builds it without importing torch. Its process runs worker.learning
(torch and the submitter's code), which the engine's template has imported already, so neither
side imports torch when a task starts (see worker.engine.template).
"""

from __future__ import annotations

from pathlib import Path

from sdk.proto import task_pb2
from worker.engine import Task


class LearningProcess(Task):
    """One federated learning task's engine task: `load` builds its worker.learning.Learner,
    each `train` trains one round. `round_input` for each `train` is {"round", "validate"};
    it returns {"samples", "validate_samples", "metrics"}."""

    def __init__(self, task_id: int, spec: task_pb2.TaskSpec, data_path: Path,
                 weights_path: str) -> None:
        super().__init__(task_id)
        self.spec_bytes = spec.SerializeToString()
        self.data_path = data_path
        self.weights_path = weights_path

    def load(self) -> None:
        # Imported here, in the task process, which has it from the template: never in the daemon.
        from worker.learning import Learner

        self.learner = Learner(int(self.task_id), self.spec_bytes, self.data_path,
                               self.weights_path)

    def train(self, device: str) -> dict:
        return self.learner.train(device, bool(self.round_input["validate"]))
