"""Differential privacy: what a task asks for, the bounds that give each released number its
sensitivity, the noise the workers add, and the accounting of what it costs.

Every release is a Skellam mechanism in the fixed-point integer domain: the difference of two
Poisson variables, which sums exactly, so that each worker's daemon adds a share and the sum
that secure aggregation unmasks carries the whole noise. Its cost is stated in zero-concentrated
DP, (xi, rho) per release (Agarwal, Kairouz and Liu, NeurIPS 2021), and composed and converted
to (epsilon, delta) by Google's dp-accounting, the same way for analytics and learning.
"""

from sdk.privacy.spec import DifferentialPrivacy, PrivacyRefused, asks_for_privacy

__all__ = ["DifferentialPrivacy", "PrivacyRefused", "asks_for_privacy"]
