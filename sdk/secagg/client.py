"""A worker's side of the protocol: a transport-free state machine, one method per phase."""

from __future__ import annotations

import hashlib
import os
import struct
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import graph, shamir
from .masks import MASK_LABEL, SHARE_LABEL, agree, pairwise_sign
from .rule import Rule

NONCE_BYTES = 12
SHARE_HEADER = struct.Struct(">II")  # sender, recipient
PLAINTEXT_BYTES = SHARE_HEADER.size + 2 * shamir.SHARE_BYTES
CIPHERTEXT_BYTES = NONCE_BYTES + PLAINTEXT_BYTES + 16  # AES-GCM tag


class SecAggError(Exception):
    """A round of secure aggregation cannot go on; the message says why."""


class Revealed(NamedTuple):
    self_mask: dict[int, int]  # worker -> this worker's share of its self-mask seed
    mask_key: dict[int, int]  # worker -> this worker's share of its masking private key


class SecAggClient:
    """Worker `index` of the `selected` workers of a round; its secrets need
    rule.threshold(selected) shares to recover, which the worker works out itself from the
    task's `rule`. Above the rule's `plus_above` selected it runs SecAgg+: it shares and masks
    only within its neighbourhood, which it derives itself from the relayed keys (graph.py)."""

    def __init__(self, index: int, rule: Rule, selected: int):
        if not 0 <= index < selected:
            raise SecAggError(f"worker number {index} of {selected} selected is not in the round")
        if rule.max_clients and selected > rule.max_clients:  # a bigger round: SecAgg+
            raise SecAggError(f"the coordinator put {selected} workers in a round of a task "
                              f"whose max_clients is {rule.max_clients}: refused, since the "
                              "round's size decides its threshold and protocol")
        self.index = index
        self.selected = selected
        self.plus = rule.uses_plus(selected)
        self.threshold = rule.threshold(selected)
        self.floor = max(rule.min_clients, self.threshold)  # fewest workers a round may sum
        self.neighbours: frozenset[int] = frozenset()  # with itself; all of U1 in Bonawitz's
        self.members: frozenset[int] = frozenset()  # U1, the workers whose keys were relayed
        self._c_sk = X25519PrivateKey.generate()  # encrypts shares
        self._s_sk = X25519PrivateKey.generate()  # agrees pairwise masks
        self._keys: dict[int, tuple[bytes, bytes]] = {}
        self._seed = os.urandom(32)  # self mask b_u
        self._ring_nonce = os.urandom(32)  # SecAgg+: its part of the ring's randomness
        self._listed: dict[int, bytes] | None = None  # SecAgg+: the ring commitments of U1
        self._held: dict[int, tuple[int, int]] = {}  # sender -> (share of b, share of s_sk)
        self._peers: set[int] = set()  # U2 as the masked input's request named it
        self._masked_with: set[int] = set()
        self._revealed = False

    @property
    def commitment(self) -> bytes:
        """SHA-256 of the self-mask seed, sent with the keys: the coordinator checks the seed it
        rebuilds from shares against it, so a wrong share cannot pass unnoticed."""
        return hashlib.sha256(self._seed).digest()

    @property
    def ring_commitment(self) -> bytes:
        """SecAgg+: the commitment to its ring nonce, sent (and signed) with the keys."""
        return graph.commit(self._ring_nonce) if self.plus else b""

    def advertise(self) -> tuple[bytes, bytes]:
        """Phase 0: the two public keys (c_pk for share encryption, s_pk for masks)."""
        return (self._c_sk.public_key().public_bytes_raw(),
                self._s_sk.public_key().public_bytes_raw())

    def reveal(self, commitments: dict[int, bytes]) -> bytes:
        """Phase 1a, SecAgg+ only: its ring nonce, once it has seen the ring commitment of
        every worker whose keys were relayed (U1), which fix the ring before any nonce is out.
        Once a round."""
        if not self.plus:
            raise SecAggError(f"worker {self.index}: a round of {self.selected} has no ring")
        if self._listed is not None:
            raise SecAggError(f"worker {self.index}: its ring nonce was already revealed")
        self._check_count(len(commitments))
        if commitments.get(self.index) != self.ring_commitment:
            raise SecAggError(f"worker {self.index}: the ring commitments lack this worker's own")
        if len(set(commitments.values())) != len(commitments):
            raise SecAggError(f"worker {self.index}: the ring commitments are not all distinct")
        self._listed = dict(commitments)
        return self._ring_nonce

    def share_keys(self, public_keys: dict[int, tuple[bytes, bytes]],
                   ring_nonces: dict[int, bytes] | None = None) -> dict[int, bytes]:
        """Phase 1: encrypted shares of b_u and s_sk_u for every other worker of its
        neighbourhood: all that advertised, or under SecAgg+ its neighbours on the ring that
        `ring_nonces` (every nonce of U1, each matching its commitment) give, whose keys, and
        only theirs, `public_keys` must hold. Given once a round, with at most `selected`
        workers advertised: more would lower the share of workers a lying coordinator needs
        below a majority."""
        if self._keys:
            raise SecAggError(f"worker {self.index}: its shares were already sent this round")
        if self.plus:
            self.neighbours = self._neighbourhood(ring_nonces or {})
            self.members = frozenset(self._listed or ())
            if set(public_keys) != self.neighbours:
                raise SecAggError(
                    f"worker {self.index}: keys came for workers {sorted(public_keys)}, where "
                    f"its neighbourhood on the ring is {sorted(self.neighbours)}")
        else:
            self._check_count(len(public_keys))
            self.neighbours = self.members = frozenset(public_keys)
        self._check_keys(public_keys)
        self._keys = dict(public_keys)
        holders = sorted(self.neighbours)
        b_shares = shamir.split(self._seed, holders, self.threshold)
        s_shares = shamir.split(self._s_sk.private_bytes_raw(), holders, self.threshold)
        self._held[self.index] = (b_shares[self.index], s_shares[self.index])
        out = {}
        for v in holders:
            if v == self.index:
                continue
            plaintext = (SHARE_HEADER.pack(self.index, v)
                         + b_shares[v].to_bytes(shamir.SHARE_BYTES, "big")
                         + s_shares[v].to_bytes(shamir.SHARE_BYTES, "big"))
            nonce = os.urandom(NONCE_BYTES)
            out[v] = nonce + self._cipher(v).encrypt(nonce, plaintext, None)
        return out

    def _neighbourhood(self, nonces: dict[int, bytes]) -> frozenset[int]:
        """SecAgg+: its neighbourhood on the ring of the revealed nonces, which must be those
        committed to in the list it revealed its own nonce for."""
        commitments = self._listed
        if commitments is None:
            raise SecAggError(f"worker {self.index}: asked for shares before the ring's nonces")
        wrong = sorted(u for u in commitments if graph.commit(nonces.get(u, b"")) != commitments[u])
        if wrong or set(nonces) != set(commitments):
            raise SecAggError(f"worker {self.index}: the ring nonces of workers "
                              f"{wrong or sorted(set(nonces) - set(commitments))} are missing "
                              "or do not match their commitments")
        return graph.neighbourhoods(nonces, self.selected)[self.index]

    def _check_count(self, advertised: int) -> None:
        """The round's U1 holds at most `selected` and at least the floor of workers."""
        if advertised > self.selected:
            raise SecAggError(f"worker {self.index}: {advertised} workers advertised keys "
                              f"in a round of {self.selected}")
        if advertised < self.floor:
            raise SecAggError(f"worker {self.index}: {advertised} workers advertised keys, "
                              f"at least {self.floor} needed")

    def _check_keys(self, public_keys: dict[int, tuple[bytes, bytes]]) -> None:
        """The relayed keys hold this worker's own, and no key twice."""
        if public_keys.get(self.index) != self.advertise():
            raise SecAggError(f"worker {self.index}: the key list lacks this worker's own keys")
        if len({k for pair in public_keys.values() for k in pair}) != 2 * len(public_keys):
            raise SecAggError(f"worker {self.index}: advertised keys are not all distinct")

    def check_shares(self, shares_for_me: dict[int, bytes]) -> list[int]:
        """Phase 2: keeps the shares other workers sent this one; the senders whose share did
        not decrypt or parse, for the coordinator to drop."""
        strangers = sorted(set(shares_for_me) - (self.neighbours - {self.index}))
        if strangers:
            raise SecAggError(f"worker {self.index}: shares from workers {strangers}, which are "
                              "not its neighbours in the round's graph (or from itself)")
        return [v for v in sorted(shares_for_me) if not self._accept_share(v, shares_for_me[v])]

    def mask_seeds(self, peers: list[int], context: bytes = b"") -> list[tuple[bytes, int]]:
        """Phase 3: the seeds and signs of this worker's masks, its self mask and one pairwise
        mask per peer of its neighbourhood in U2 (the workers that shared keys):
        y = x + PRG(b_u) + sum_{v>u} PRG(s_uv) - sum_{v<u} PRG(s_uv) mod 2^64.
        `masks.accumulate` expands them. Pairwise seeds are derived under `context`
        (binding.round_context). Given once a round."""
        if self._masked_with:
            raise SecAggError(f"worker {self.index}: a masked input was already sent this round")
        peer_set = set(peers) & self.neighbours - {self.index}
        missing = sorted(peer_set - set(self._held) | set(peers) - self.members)
        if self.index not in peers or missing:
            raise SecAggError(f"worker {self.index}: asked to mask with {len(peers)} workers, "
                              f"{'' if self.index in peers else 'not itself, '}of which it "
                              f"holds no shares of {missing}")
        if len(peer_set) + 1 < self.threshold or len(peers) < self.floor:
            raise SecAggError(f"worker {self.index}: {len(peers)} workers shared keys, "
                              f"{len(peer_set) + 1} of them of its neighbourhood; at least "
                              f"{self.floor}, and {self.threshold} of its neighbourhood, needed")
        self._peers = set(peers)
        self._masked_with = peer_set | {self.index}
        return [(self._seed, 1)] + [
            (agree(self._s_sk, self._keys[v][1], MASK_LABEL + context),
             pairwise_sign(self.index, v))
            for v in sorted(peer_set)]

    def unmask(self, survivors: list[int]) -> Revealed:
        """Phase 4: shares of b_v for the survivors (whose input is summed) and of s_sk_v for
        the rest of U2, within its neighbourhood. Answered once: never both kinds of share for
        the same worker; at least a threshold of its own neighbourhood must have survived."""
        if self._revealed:
            raise SecAggError(f"worker {self.index}: shares were already revealed for this round")
        survivors_set = set(survivors)
        if not survivors_set <= self._peers or self.index not in survivors_set:
            raise SecAggError(f"worker {self.index}: the {len(survivors_set)} survivors are not "
                              f"a subset of the {len(self._peers)} of U2 holding this worker")
        mine = survivors_set & self._masked_with
        if len(survivors_set) < self.floor or len(mine) < self.threshold:
            raise SecAggError(f"worker {self.index}: {len(survivors_set)} survivors, "
                              f"{len(mine)} of them of its neighbourhood; at least "
                              f"{self.floor}, and {self.threshold} of its neighbourhood, needed")
        self._revealed = True
        held = {v: s for v, s in self._held.items() if v in self._masked_with}
        return Revealed({v: b for v, (b, _) in held.items() if v in mine},
                        {v: s for v, (_, s) in held.items() if v not in mine})

    def _cipher(self, peer: int) -> AESGCM:
        return AESGCM(agree(self._c_sk, self._keys[peer][0], SHARE_LABEL))

    def _accept_share(self, sender: int, ciphertext: bytes) -> bool:
        """Decrypts and keeps `sender`'s share for this worker; False when it is malformed."""
        try:
            plaintext = self._cipher(sender).decrypt(
                ciphertext[:NONCE_BYTES], ciphertext[NONCE_BYTES:], None)
        except (InvalidTag, ValueError, TypeError):
            return False
        if len(plaintext) != PLAINTEXT_BYTES or SHARE_HEADER.unpack_from(plaintext) != (
                sender, self.index):
            return False
        body = plaintext[SHARE_HEADER.size:]
        b, s = (int.from_bytes(body[i:i + shamir.SHARE_BYTES], "big")
                for i in (0, shamir.SHARE_BYTES))
        if b >= shamir.PRIME or s >= shamir.PRIME:
            return False
        self._held[sender] = (b, s)
        return True
