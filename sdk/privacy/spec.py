"""What a task asks for: (epsilon, delta)-differential privacy of the numbers it releases."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sdk.proto import task_pb2


class PrivacyRefused(ValueError):
    """A task cannot be run under differential privacy as written; the message says what to
    change (which column needs a bound, say)."""


@dataclass(frozen=True)
class DifferentialPrivacy:
    """(epsilon, delta)-DP for everything a task releases, against the addition or removal of
    one row (analytics) or of one holder's whole dataset (DP-FedAvg)."""

    epsilon: float
    delta: float = 1e-6

    def __post_init__(self) -> None:
        for name in ("epsilon", "delta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise PrivacyRefused(f"{name} must be a number, not {value!r}")
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise PrivacyRefused(f"epsilon must be a positive number, not {self.epsilon!r}")
        if not 0 < self.delta < 1:
            raise PrivacyRefused(f"delta must be between 0 and 1 (such as 1e-6), not "
                                 f"{self.delta!r}")

    def to_proto(self) -> task_pb2.DifferentialPrivacy:
        """The message it travels as, in a task's spec."""
        return task_pb2.DifferentialPrivacy(epsilon=self.epsilon, delta=self.delta)

    @classmethod
    def from_spec(cls, spec: task_pb2.TaskSpec) -> DifferentialPrivacy | None:
        """The privacy a task's spec asks for, or None; PrivacyRefused if it is malformed."""
        if not spec.HasField("privacy"):
            return None
        return cls(spec.privacy.epsilon, spec.privacy.delta)


def asks_for_privacy(spec: task_pb2.TaskSpec) -> bool:
    """Whether a task asks for differential privacy: analytics with `privacy`, learning with
    DP-FedAvg's noise."""
    if spec.kind == task_pb2.TASK_KIND_LEARNING:
        return spec.learning.noise_multiplier > 0
    return spec.HasField("privacy")
