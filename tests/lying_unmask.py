"""The attack a larger secagg_threshold defends against, in process: a coordinator that relays
a round faithfully up to unmasking, then tells some of one worker's share holders that it
survived (they reveal shares of its self-mask seed) and the others that it dropped (they reveal
shares of its mask key), while colluding holders hand it both shares they hold."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sdk.secagg import Rule, SecAggClient, SecAggServer, shamir

VICTIM = 0


def masked_round(rule: Rule, n: int) -> tuple[dict[int, SecAggClient], SecAggServer]:
    """Workers 0..n-1 through keys, (SecAgg+) ring, shares, check and masked input, relayed
    faithfully."""
    clients = {u: SecAggClient(u, rule, n) for u in range(n)}
    server = SecAggServer(n, rule, 8)
    for u, c in clients.items():
        server.receive_keys(u, *c.advertise(), c.commitment, c.ring_commitment)
    server.public_keys()
    nonces = None
    if server.plus:
        commitments = server.ring_commitments()
        for u, c in clients.items():
            server.receive_nonce(u, c.reveal(commitments))
        nonces = server.ring_nonces()
    for u, c in clients.items():
        server.receive_shares(u, c.share_keys(server.keys_for(u), nonces))
    routed = server.routed_shares()
    for u, c in clients.items():
        server.receive_check(u, c.check_shares(routed[u]))
    peers = server.masking_peers()
    for c in clients.values():
        c.mask_seeds(peers)
    return clients, server


def split_survivors(rule: Rule, n: int, colluders: int) -> tuple[bool, bool]:
    """Runs the attack on worker VICTIM with `colluders` of its share holders, splitting the
    honest ones as the coordinator best can: just enough told it survived to rebuild its seed
    with the colluders' shares, the rest told it dropped. Whether its self-mask seed and its
    mask key were rebuilt (both: its input is the coordinator's)."""
    clients, server = masked_round(rule, n)
    holders = sorted(server.neighbours(VICTIM) - {VICTIM})
    bad, honest = holders[:colluders], holders[colluders:]
    t = clients[VICTIM].threshold
    told_survived = [VICTIM] + honest[:max(0, t - colluders - 1)]
    everyone = sorted(server.u2)
    seed = {u: clients[u]._held[VICTIM][0] for u in bad}  # what colluders hold, both kinds
    key = {u: clients[u]._held[VICTIM][1] for u in bad}
    for u in [VICTIM] + honest:
        if u in told_survived:
            seed[u] = clients[u].unmask(everyone).self_mask[VICTIM]
        else:
            key[u] = clients[u].unmask([v for v in everyone if v != VICTIM]).mask_key[VICTIM]
    rebuilt_seed, rebuilt_key = _combine(seed), _combine(key)
    return (rebuilt_seed is not None
            and hashlib.sha256(rebuilt_seed).digest() == server._commitments[VICTIM],
            rebuilt_key is not None
            and X25519PrivateKey.from_private_bytes(rebuilt_key).public_key()
            .public_bytes_raw() == server._keys[VICTIM][1])


def _combine(shares: dict[int, int]) -> bytes | None:
    """What the coordinator interpolates from `shares`; None where too few shares give a
    field element past 32 bytes (or a wrong one, which the checks above refuse)."""
    try:
        return shamir.combine(shares)
    except ValueError:
        return None
