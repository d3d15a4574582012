"""DP-FedAvg (McMahan et al., ICLR 2018): each worker's update clipped and noised by its daemon.

A worker's update is its trained weights minus the global ones it downloaded, over the model's
floating-point values (d of them, in float64). Its daemon clips it to L2 norm C and releases, in
fixed point (10^precision units), the global weights plus the clipped update plus its share of
Skellam noise of standard deviation z * C; integer tensors keep the global value. Each worker
weighs 1, so the coordinator divides the sum by the number of workers summed.

The guarantee is client-level, against adding or removing one holder's whole dataset (its
update then being zero): in fixed point that changes the sum by at most C * 10^precision in L2
norm, plus less than 1 per value for the rounding of each to the grid (sqrt(d) in L2 norm), and
by at most sqrt(d) times that in L1 norm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from sdk.privacy.accounting import Cost, calibrate, epsilon
from sdk.privacy.noise import Noise
from sdk.privacy.spec import DifferentialPrivacy, PrivacyRefused
from sdk.proto import task_pb2
from sdk.weights import float_values

DEFAULT_DELTA = DifferentialPrivacy(1.0).delta
PIECE = 1 << 20  # values noised at a time: the sampler holds a few arrays of this size


def check_parameters(clip_norm: float | None, noise_multiplier: float | None) -> None:
    """PrivacyRefused, saying what to change, unless both are positive numbers or both None."""
    given = [name for name, value in (("clip_norm", clip_norm),
                                      ("noise_multiplier", noise_multiplier))
             if value is not None]
    if len(given) == 1:
        missing = "noise_multiplier" if given == ["clip_norm"] else "clip_norm"
        raise PrivacyRefused(f"DP-FedAvg needs both clip_norm and noise_multiplier: {given[0]} "
                             f"is given without {missing}; give both, or neither for FedAvg "
                             "without differential privacy")
    for name, value in (("clip_norm", clip_norm), ("noise_multiplier", noise_multiplier)):
        if value is None:
            continue
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not (math.isfinite(value) and value > 0)):
            raise PrivacyRefused(f"{name} must be a positive number, not {value!r}")


@dataclass(frozen=True)
class DPFedAvg:
    """A learning task's DP-FedAvg: clip norm C, noise multiplier z, the fixed point's decimal
    digits, the model's floating-point values d, and the delta epsilon is reported at."""

    clip_norm: float
    noise_multiplier: float
    precision: int
    dimension: int
    delta: float = DEFAULT_DELTA

    @classmethod
    def from_spec(cls, spec: task_pb2.TaskSpec) -> DPFedAvg | None:
        """The task's DP-FedAvg, or None without it; PrivacyRefused if its spec is malformed
        (a spec need not come from the SDK)."""
        learning = spec.learning
        if not learning.clip_norm and not learning.noise_multiplier:
            return None
        check_parameters(learning.clip_norm or None, learning.noise_multiplier or None)
        privacy = DifferentialPrivacy.from_spec(spec)
        return cls(learning.clip_norm, learning.noise_multiplier, spec.precision,
                   float_values(list(learning.weights)),
                   privacy.delta if privacy is not None else DEFAULT_DELTA)

    @property
    def scale(self) -> float:
        return 10.0**self.precision

    def noise(self) -> Noise:
        """The whole noise of a round's sum: standard deviation z * C, in fixed-point units."""
        return Noise.for_sigma(self.noise_multiplier * self.clip_norm * self.scale)

    def round_cost(self) -> Cost:
        """What one round costs a holder, in zCDP."""
        l2 = self.clip_norm * self.scale + math.sqrt(self.dimension)
        return self.noise().cost(l2=l2, l1=math.sqrt(self.dimension) * l2,
                                 dimension=self.dimension)

    def epsilon(self, rounds: int) -> float:
        """The epsilon of `rounds` rounds, at this task's delta, by dp-accounting."""
        return epsilon(self.round_cost().times(rounds), self.delta)

    def noise_multiplier_for(self, target_epsilon: float, rounds: int) -> float:
        """The smallest noise multiplier (to 0.1%) whose `rounds` rounds stay within
        `target_epsilon` at this task's delta."""
        return calibrate(lambda z: replace(self, noise_multiplier=z).round_cost().times(rounds),
                         target_epsilon, self.delta)

    def clipped(self, global_values: np.ndarray, trained: np.ndarray) -> np.ndarray:
        """The global values plus the update clipped to L2 norm C, in fixed point (int64):
        each rounded to the grid on its own, so that the update's part stays within
        C * 10^precision + sqrt(d) / 2. An update that is not finite counts as zero."""
        update = clip(trained.astype(np.float64) - global_values, self.clip_norm)
        return np.rint(global_values * self.scale).astype(np.int64) + np.rint(
            update * self.scale).astype(np.int64)

    def release(self, global_values: np.ndarray, trained: np.ndarray, shares: int) -> np.ndarray:
        """`clipped` plus this worker's share of the round's noise, one of `shares`."""
        values, noise = self.clipped(global_values, trained), self.noise()
        for start in range(0, values.size, PIECE):
            values[start:start + PIECE] = noise.add(values[start:start + PIECE], shares)
        return values


def clip(update: np.ndarray, bound: float) -> np.ndarray:
    """`update` scaled down to L2 norm `bound` if longer; zero if any value is NaN or infinite."""
    if not np.isfinite(update).all():
        return np.zeros_like(update)
    largest = float(np.abs(update).max(initial=0.0))
    if largest == 0.0:
        return update
    norm = largest * float(np.linalg.norm(update / largest))  # no overflow in the squares
    return update * (bound / norm) if norm > bound else update
