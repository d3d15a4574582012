"""Skellam noise in the fixed-point integer domain, added by each worker's daemon as its share.

A Skellam variable of variance V is the difference of two Poisson(V / 2) variables, and the sum
of independent Skellam variables is again Skellam, of the summed variance: so each of h workers
adds Skellam(V / h), and a sum under secure aggregation that holds h honest workers' shares
carries Skellam(V) exactly. Values are integers in fixed-point units (a float times
10^precision, rounded; integers as they are). Where V is too large for numpy's Poisson sampler
to be exact, values are first rounded to a multiple of a power of ten `step` and the noise is
`step` times a Skellam variable: the rounding moves a sum by at most `step`, which the cost
accounts for.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import numpy as np

from sdk.privacy.accounting import Cost, skellam_cost

# The largest noise standard deviation in steps. numpy's Poisson sampler works in doubles: past
# a mean of about 1e14 its variance is off (by half again at 1e16), so a step keeps it at 2^39.
MAX_STEP_SIGMA = 2.0**20


@dataclass(frozen=True)
class Noise:
    """The noise of one release: its total variance in steps, and the step in fixed-point units."""

    variance: float
    step: int

    @classmethod
    def for_sigma(cls, sigma: float) -> Noise:
        """Noise of standard deviation `sigma` (fixed-point units) on the finest usable step."""
        step = 1
        while sigma / step > MAX_STEP_SIGMA:
            step *= 10
        return cls((sigma / step) ** 2, step)

    def cost(self, l2: float, l1: float, dimension: int = 1) -> Cost:
        """The zCDP cost of this noise on values of sensitivity l2 and l1 (fixed-point units)
        spread over `dimension` values: rounding to a coarser step adds 1 per value."""
        rounding = 0 if self.step == 1 else 1
        return skellam_cost(l2 / self.step + rounding * np.sqrt(dimension),
                            l1 / self.step + rounding * dimension, self.variance)

    def add(self, values: np.ndarray, shares: int) -> np.ndarray:
        """`values` (int64 fixed-point units) rounded to the step, plus this worker's share:
        Skellam noise of variance `variance / shares` steps, from a generator seeded with fresh
        entropy from the operating system."""
        values = np.asarray(values, dtype=np.int64)
        if self.step > 1:
            values = (values + self.step // 2) // self.step * self.step
        return values + self.step * sample(self.variance / shares, values.shape)

    def add_exact(self, values: list[int], shares: int) -> list[int]:
        """`add` for Python integers of any size (an analytics part in fixed point may pass
        2^63): the same rounding and noise, without int64's range."""
        half = self.step // 2
        noise = sample(self.variance / shares, (len(values),)).tolist()
        return [(v + half) // self.step * self.step + self.step * k
                for v, k in zip(values, noise, strict=True)]

    def std(self) -> float:
        """The standard deviation of the whole noise, in fixed-point units."""
        return float(np.sqrt(self.variance) * self.step)


def sample(variance: float, shape: tuple[int, ...]) -> np.ndarray:
    """Skellam variables of `variance` (int64): Poisson(variance/2) - Poisson(variance/2)."""
    generator = np.random.Generator(np.random.Philox(secrets.randbits(128)))
    return (generator.poisson(variance / 2, shape) - generator.poisson(variance / 2, shape)
            ).astype(np.int64)
