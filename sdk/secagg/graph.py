"""SecAgg+ (Bell, Bonawitz, Gascón, Lepoint, Raykova, CCS 2020): whom each worker of a large
round masks and shares with.

Bonawitz's protocol has every worker mask with, and secret-share to, every other: quadratic in
the round. Above `secagg_plus_above` selected workers, each worker's *neighbourhood* is itself
and its k/2 nearest workers on either side of a ring (a random Harary graph, k = 2 ceil(log2 n),
even, n the workers selected); it masks pairwise only with its neighbours and splits its secrets
among its neighbourhood only, any t of them recovering them (a majority, k/2 + 1, by default:
rule.py).

The ring's order comes from a commit-reveal among the workers: each signs, with its keys, the
SHA-256 of a fresh nonce; once every key (and commitment) is relayed, each reveals its nonce, and
the ring is a hash of all the nonces of U1 (those whose keys were relayed), every one of which
must be revealed. Nobody knows the ring before the last commitment is fixed, and no one, the
coordinator and workers colluding with it included, can then steer it. Each worker derives its
neighbourhood itself and refuses shares, masks and unmasking outside it; a coordinator that
relays different keys or nonces to different workers gets rings that disagree, hence refusals.
docs/secure-aggregation.md states the guarantees.
"""

from __future__ import annotations

import hashlib
import math
import struct

PLUS_ABOVE = 32  # the SDK's default: rounds of more selected workers use SecAgg+
LABEL = b"deltaflow secagg+ ring v1\0"


def uses_plus(selected: int, plus_above: int) -> bool:
    """Whether a round of `selected` workers runs SecAgg+ (`plus_above` 0: never)."""
    return 0 < plus_above < selected


def degree(selected: int) -> int:
    """k, the neighbours each worker has: 2 ceil(log2 n), at most n - 1, even, at least 2."""
    k = 2 * math.ceil(math.log2(selected))
    return max(2, min(k, (selected - 1) // 2 * 2))


def commit(nonce: bytes) -> bytes:
    """The commitment to a ring nonce that a worker signs with its keys."""
    return hashlib.sha256(LABEL + nonce).digest()


def ring(nonces: dict[int, bytes], selected: int) -> list[int]:
    """The workers of U1 in ring order: sorted by a hash of their number under a seed that is
    the digest of every revealed nonce (with its worker's number, in number order)."""
    digest = hashlib.sha256(LABEL + struct.pack(">I", selected))
    for u in sorted(nonces):
        digest.update(struct.pack(">II", u, len(nonces[u])) + nonces[u])
    seed = digest.digest()
    return sorted(nonces, key=lambda u: hashlib.sha256(seed + struct.pack(">I", u)).digest())


def neighbourhoods(nonces: dict[int, bytes], selected: int) -> dict[int, frozenset[int]]:
    """Each worker of U1 -> its neighbourhood (itself included) on the ring of `ring`. A ring
    of fewer than k + 1 workers makes every neighbourhood all of them."""
    order = ring(nonces, selected)
    half, size = degree(selected) // 2, len(order)
    return {u: frozenset(order[(place + step) % size] for step in range(-half, half + 1))
            for place, u in enumerate(order)}
