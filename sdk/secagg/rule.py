"""A round's secure-aggregation threshold, decided by the signed task alone.

Any t of the workers holding shares of one worker's secrets (all selected in Bonawitz's
protocol, its neighbourhood of k + 1 under SecAgg+) rebuild them: t = floor(f * size) + 1, at
least min_clients in Bonawitz's protocol, at most size, f being the task's `secagg_threshold`
(0.5 <= f < 1). A coordinator that lies about who dropped (telling some holders a worker
survived, so they reveal shares of its self mask, and others that it dropped, so they reveal
shares of its mask key) gets both of its secrets, hence its input, with 2t - size colluding
holders; a round tolerates size - t dropouts. f = 0.5 gives a majority: one or two colluders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sdk.proto import task_pb2

from . import graph

DEFAULT_FRACTION = 0.5


def check_fraction(fraction: float) -> float:
    """`fraction` as a float, or ValueError saying what it must be."""
    if (isinstance(fraction, bool) or not isinstance(fraction, (int, float))
            or not 0.5 <= fraction < 1):
        raise ValueError(
            f"secagg_threshold is the fraction f of a round's workers (of a SecAgg+ "
            f"neighbourhood) whose shares rebuild a worker's masks, t = floor(f x n) + 1, a "
            f"number with 0.5 <= f < 1 (0.5, the default, a majority; higher needs more "
            f"colluders to unmask one input and tolerates fewer dropouts), not {fraction!r}")
    return float(fraction)


@dataclass(frozen=True)
class Rule:
    """The task's `min_clients`, `secagg_plus_above` (rounds of more selected workers run
    SecAgg+; 0: never), `secagg_threshold` fraction and `max_clients` (0: no bound)."""

    min_clients: int
    plus_above: int = 0
    fraction: float = DEFAULT_FRACTION
    max_clients: int = 0

    def __post_init__(self) -> None:
        check_fraction(self.fraction)

    @classmethod
    def of(cls, spec: task_pb2.TaskSpec) -> Rule:
        """The signed task's rule (a spec without `secagg_threshold` has 0.5); ValueError for
        a fraction below a majority."""
        return cls(spec.rules.min_clients, spec.secagg_plus_above,
                   spec.secagg_threshold or DEFAULT_FRACTION, spec.rules.max_clients)

    def uses_plus(self, selected: int) -> bool:
        return graph.uses_plus(selected, self.plus_above)

    def size(self, selected: int) -> int:
        """How many workers hold shares of one worker's secrets: the selected, or a SecAgg+
        neighbourhood of k + 1."""
        return graph.degree(selected) + 1 if self.uses_plus(selected) else selected

    def threshold(self, selected: int) -> int:
        """t, the shares that rebuild a worker's secrets in a round of `selected`."""
        if not 1 <= self.min_clients <= selected:
            raise ValueError(f"min_clients {self.min_clients} must be between 1 and {selected}")
        size = self.size(selected)
        least = 1 if self.uses_plus(selected) else self.min_clients
        return min(size, max(math.floor(self.fraction * size) + 1, least))

    def colluders(self, selected: int) -> int:
        """Colluding share holders a coordinator lying about who dropped needs to get both
        secrets of one worker: 2t - size."""
        return 2 * self.threshold(selected) - self.size(selected)

    def describe(self, selected: int) -> str:
        """The threshold, its rule, the dropouts it tolerates and the colluders it takes, for
        the task's log."""
        t, size, c, f = (self.threshold(selected), self.size(selected),
                         self.colluders(selected), f"{self.fraction:g}")
        if self.uses_plus(selected):
            return (f"t = floor({f} x (k + 1)) + 1 = {t} of each SecAgg+ neighbourhood of "
                    f"k + 1 = {size} workers (k = {size - 1} for {selected} selected; "
                    f"secagg_threshold {f}): a neighbourhood may lose {size - t}, and a "
                    f"coordinator lying about who dropped needs 2t - (k + 1) = {c} colluding "
                    f"neighbour(s) to unmask one worker's input")
        return (f"t = max(min_clients, floor({f} x selected) + 1) = {t} of {selected} selected "
                f"(secagg_threshold {f}): {size - t} may drop out, and a coordinator lying "
                f"about who dropped needs 2t - n = {c} colluding worker(s) to unmask one "
                f"worker's input")
