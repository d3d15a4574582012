"""What releases cost, and their composition into (epsilon, delta), with Google's dp-accounting.

The unit is zero-concentrated DP as dp-accounting's `ZCDpEvent(rho, xi)` states it: Renyi DP of
order alpha at most xi + rho * alpha. A Skellam release of integer sensitivity L2 and L1 with
total variance V costs rho = L2^2 / (2V) and xi = 3 * L1 / (2V) (Agarwal, Kairouz and Liu, The
Skellam Mechanism for Differentially Private Federated Learning, NeurIPS 2021, Theorem 3.5's
second bound). That theorem holds for integer orders alpha > 1 only, so dp-accounting's RDP
accountant is asked at integer orders (ORDERS), never at its default fractional ones. zCDP costs
compose by adding; dp-accounting converts them to (epsilon, delta).
dp-accounting is imported on first use: it takes a second or two, and only DP tasks need it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sdk.secagg.rule import Rule

# The Renyi orders epsilon is sought at: integers, where the Skellam bound holds.
ORDERS = tuple(range(2, 65)) + (80, 96, 128, 192, 256, 384, 512, 768, 1024)


@dataclass(frozen=True)
class Cost:
    """A release's privacy cost in zCDP: Renyi DP of order alpha at most xi + rho * alpha."""

    rho: float
    xi: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.rho + other.rho, self.xi + other.xi)

    def times(self, count: int) -> Cost:
        return Cost(self.rho * count, self.xi * count)

    @staticmethod
    def total(costs: Iterable[Cost]) -> Cost:
        return sum(costs, Cost(0.0))


def skellam_cost(l2: float, l1: float, variance: float) -> Cost:
    """The cost of adding Skellam noise of `variance` to integers of sensitivity l2 and l1."""
    return Cost(l2 * l2 / (2 * variance), 3 * l1 / (2 * variance))


def epsilon(cost: Cost, delta: float) -> float:
    """The epsilon of (epsilon, delta)-DP that `cost` gives, by dp-accounting's RDP accountant."""
    if cost.rho <= 0 and cost.xi <= 0:
        return 0.0
    from dp_accounting import dp_event
    from dp_accounting.rdp import rdp_privacy_accountant

    accountant = rdp_privacy_accountant.RdpAccountant(list(ORDERS))
    accountant.compose(dp_event.ZCDpEvent(cost.rho, cost.xi))
    return float(accountant.get_epsilon(delta))


def calibrate(cost_at: Callable[[float], Cost], target_epsilon: float, delta: float) -> float:
    """The smallest noise multiplier z (to 0.1%) whose `cost_at(z)` stays within
    (target_epsilon, delta), found by dp-accounting's calibration."""
    import dp_accounting
    from dp_accounting import dp_event
    from dp_accounting.rdp import rdp_privacy_accountant

    def event(z: float) -> dp_event.DpEvent:
        cost = cost_at(z)
        return dp_event.ZCDpEvent(cost.rho, cost.xi)

    return float(dp_accounting.calibrate_dp_mechanism(
        lambda: rdp_privacy_accountant.RdpAccountant(list(ORDERS)), event, target_epsilon, delta,
        dp_accounting.LowerEndpointAndGuess(1e-3, 1.0), tol=1e-3))


def describe(cost: Cost, delta: float) -> str:
    return f"epsilon {epsilon(cost, delta):.4g} at delta {delta:g} (zCDP rho {cost.rho:.4g})"


def fewest_honest(rule: Rule, selected: int) -> int:
    """How many workers' noise shares a sum under secure aggregation always holds: the task's
    threshold t (`Rule.threshold`: max(min_clients, floor(f x selected) + 1), or under SecAgg+
    a neighbourhood's floor(f x (k + 1)) + 1, f the task's secagg_threshold): every worker
    unmasks only with t survivors, and a coordinator that claims a ring's arc dropped can sum
    as few workers as that (docs/secure-aggregation.md). Each worker adds 1/this of the noise,
    so the sum carries all of it as long as that many of the summed workers are honest."""
    return rule.threshold(selected)

