"""A whole round with every worker in this process: for tests, checks and the crypto benchmark."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .client import SecAggClient
from .masks import accumulate
from .rule import Rule
from .server import SecAggServer

Tamper = Callable[[str, int, Any], Any]  # (phase, worker, message) -> the message sent


def _untimed(role: str, phase: str, fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def run_local(vectors: dict[int, np.ndarray], rule: Rule,
              drop: dict[str, set[int]] | None = None, tamper: Tamper | None = None,
              timed: Callable[..., Any] = _untimed) -> tuple[SecAggServer, np.ndarray]:
    """Sums the encoded `vectors` (uint64 or uint32 words) of workers 0..n-1 through every
    phase of the protocol.

    `drop[phase]` go silent from that phase on ("advertise", "ring" (SecAgg+ only), "share",
    "check", "mask", "unmask"); `tamper` may rewrite what a worker sends; `timed(role, phase, fn, *args)` runs
    each step ("worker" or "coordinator"); `rule` is the task's (threshold, SecAgg+ above its
    `plus_above` workers).
    Returns the server and the unmasked total.
    """
    n = len(vectors)
    clients = {u: SecAggClient(u, rule, n) for u in range(n)}
    server = SecAggServer(n, rule, len(vectors[0]),
                          total=np.zeros(len(vectors[0]), vectors[0].dtype))
    tamper = tamper or (lambda phase, u, message: message)
    drop = drop or {}
    gone: set[int] = set()

    def speaking(phase: str, among: Any) -> list[int]:
        gone.update(drop.get(phase, ()))
        return [u for u in clients if u not in gone and u in among]

    def worker(phase: str, u: int, fn: Callable[..., Any], *args: Any) -> Any:
        return tamper(phase, u, timed("worker", phase, fn, *args))

    def coordinator(phase: str, fn: Callable[..., Any], *args: Any) -> Any:
        return timed("coordinator", phase, fn, *args)

    for u in speaking("advertise", clients):
        coordinator("advertise", server.receive_keys, u,
                    *worker("advertise", u, clients[u].advertise), clients[u].commitment,
                    clients[u].ring_commitment)
    keys = coordinator("advertise", server.public_keys)
    nonces = None
    if server.plus:
        commitments = server.ring_commitments()
        for u in speaking("ring", keys):
            coordinator("ring", server.receive_nonce, u,
                        worker("ring", u, clients[u].reveal, commitments))
        nonces = coordinator("ring", server.ring_nonces)
    for u in speaking("share", keys):
        coordinator("share", server.receive_shares, u,
                    worker("share", u, clients[u].share_keys, server.keys_for(u), nonces))
    routed = coordinator("share", server.routed_shares)
    for u in speaking("check", routed):
        coordinator("check", server.receive_check, u,
                    worker("check", u, clients[u].check_shares, routed[u]))
    peers = coordinator("check", server.masking_peers)
    server.context = b"a round's context"
    for u in speaking("mask", peers):
        masked = worker("mask", u, _masked, clients[u], vectors[u], peers)
        coordinator("mask", server.receive_masked, u, masked.size, [masked])
    survivors = coordinator("mask", server.unmask_request)
    for u in speaking("unmask", survivors):
        coordinator("unmask", server.receive_unmask, u,
                    worker("unmask", u, clients[u].unmask, survivors))
    return server, coordinator("unmask", server.unmasked_total)


def _masked(client: SecAggClient, vector: np.ndarray, peers: list[int]) -> np.ndarray:
    masked = vector.copy()
    accumulate(masked, [], client.mask_seeds(peers, b"a round's context"))
    return masked
