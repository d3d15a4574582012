"""Shamir secret sharing over the prime field of the Mersenne prime 2^521 - 1.

Secrets are 32-byte strings (seeds and X25519 private keys); worker `i` holds the share at x = i + 1.
"""

from __future__ import annotations

import secrets

PRIME = 2**521 - 1
SHARE_BYTES = 66  # ceil(521 / 8)


def split(secret: bytes, holders: list[int], threshold: int) -> dict[int, int]:
    """Shares of `secret` for each holder index; any `threshold` of them recover it."""
    if not 1 <= threshold <= len(holders):
        raise ValueError(f"threshold {threshold} must be between 1 and {len(holders)} holders")
    coefficients = [int.from_bytes(secret, "big")]
    coefficients += [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares = {}
    for holder in holders:
        x, y = holder + 1, 0
        for c in reversed(coefficients):
            y = (y * x + c) % PRIME
        shares[holder] = y
    return shares


def combine(shares: dict[int, int], size: int = 32) -> bytes:
    """The `size`-byte secret that at least `threshold` shares (holder index -> share) give."""
    secret = interpolate(shares)
    if secret >= 1 << (8 * size):
        raise ValueError("the shares do not interpolate to a secret of the expected size")
    return secret.to_bytes(size, "big")


def interpolate(shares: dict[int, int]) -> int:
    """The field element at x = 0 of the polynomial through `shares`."""
    xs = {holder: holder + 1 for holder in shares}
    secret = 0
    for holder, y in shares.items():
        numerator, denominator = 1, 1
        for other, x in xs.items():
            if other != holder:
                numerator = numerator * -x % PRIME
                denominator = denominator * (xs[holder] - x) % PRIME
        secret = (secret + y * numerator * pow(denominator, -1, PRIME)) % PRIME
    return secret
