"""The coordinator's side: relays what it cannot read, tracks who is still in, unmasks the sum."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from . import graph, shamir
from .client import CIPHERTEXT_BYTES, Revealed, SecAggError
from .masks import MASK_LABEL, accumulate, agree, pairwise_sign
from .rule import Rule

KEY_BYTES = 32


class SecAggServer:
    """One round over workers 0..n_selected-1, summing vectors of `vector_length` words: uint64,
    or uint32 where `total` (memory to reuse for the sum) is of them.

    Each phase's messages go to `receive_*`; the method that hands out the next phase's request
    closes the phase. Masked inputs are added into one running total as they come, so memory
    holds one vector whatever the number of workers. `dropped` names every worker that left and
    why; `names` (index -> name) is how messages call the workers. The task's `rule` gives the
    threshold; above its `plus_above` selected the round is SecAgg+: shares and masks only
    within neighbourhoods (graph.py).
    """

    def __init__(self, n_selected: int, rule: Rule, vector_length: int,
                 names: list[str] | None = None, total: np.ndarray | None = None):
        self.n_selected = n_selected
        self.rule = rule
        self.plus = rule.uses_plus(n_selected)
        self.threshold = rule.threshold(n_selected)
        self.floor = max(rule.min_clients, self.threshold)  # fewest workers a round may sum
        self.vector_length = vector_length
        self.names = names or [f"worker {u}" for u in range(n_selected)]
        if total is None:
            total = np.zeros(vector_length, dtype=np.uint64)
        elif total.dtype not in (np.uint32, np.uint64) or total.shape != (vector_length,):
            raise ValueError(f"a total of {total.dtype} {total.shape} for {vector_length} words")
        else:
            total.fill(0)
        self.total = total
        self.context = b""  # what the pairwise mask seeds are bound to (see mask_seeds)
        self.dropped: dict[int, str] = {}
        self.u1: set[int] = set()  # advertised keys
        self.u2: set[int] = set()  # shared keys, and no worker found their shares malformed
        self.u3: set[int] = set()  # sent a masked input, which is summed
        self.u4: set[int] = set()  # revealed shares
        self._keys: dict[int, tuple[bytes, bytes]] = {}
        self._ring_commitments: dict[int, bytes] = {}  # SecAgg+
        self._nonces: dict[int, bytes] = {}
        self._graph: dict[int, frozenset[int]] = {}  # SecAgg+: each worker's neighbourhood
        self._commitments: dict[int, bytes] = {}
        self._ciphertexts: dict[int, dict[int, bytes]] = {}
        self._checked: dict[int, list[int]] = {}  # worker -> senders of its malformed shares
        self._masked: dict[int, None] = {}
        self._revealed: dict[int, Revealed] = {}

    # Phase 0: advertise keys
    def receive_keys(self, u: int, c_pk: bytes, s_pk: bytes, commitment: bytes,
                     ring_commitment: bytes = b"") -> None:
        """`u`'s public keys, the SHA-256 of its self-mask seed and (SecAgg+) the commitment
        to its ring nonce."""
        self._check(u, set(range(self.n_selected)), self._keys, "advertise")
        sizes = {len(c_pk), len(s_pk), len(commitment)} | (
            {len(ring_commitment)} if self.plus else set())
        if sizes != {KEY_BYTES}:
            self.dropped[u] = (f"advertised keys of {len(c_pk)} and {len(s_pk)} bytes and "
                               f"commitments of {len(commitment)} and {len(ring_commitment)}, "
                               f"where all take {KEY_BYTES}")
        else:
            self._keys[u] = (c_pk, s_pk)
            self._commitments[u] = commitment
            self._ring_commitments[u] = ring_commitment

    def public_keys(self) -> dict[int, tuple[bytes, bytes]]:
        """Closes advertising: the keys of U1, for every worker in it."""
        self.u1 = self._close("advertise", self._keys, range(self.n_selected), "sent no keys")
        return {u: self._keys[u] for u in sorted(self.u1)}

    def ring_commitments(self) -> dict[int, bytes]:
        """SecAgg+: the ring commitments of U1, relayed with its keys."""
        return {u: self._ring_commitments[u] for u in sorted(self.u1)}

    # Phase 1a (SecAgg+): reveal the ring's nonces
    def receive_nonce(self, u: int, nonce: bytes) -> None:
        self._check(u, self.u1, self._nonces, "ring")
        if graph.commit(nonce) != self._ring_commitments[u]:
            self.dropped[u] = "revealed a ring nonce that is not the one it committed to"
        else:
            self._nonces[u] = nonce

    def ring_nonces(self) -> dict[int, bytes]:
        """Closes the ring: every nonce of U1, which fixes each worker's neighbourhood. Every
        worker of U1 must have revealed its nonce, or the round fails: leaving some out would
        let the coordinator choose among rings."""
        self._close("ring", self._nonces, self.u1, "revealed no ring nonce")
        missing = sorted(self.u1 - set(self._nonces))
        if missing:
            raise SecAggError(
                "secure aggregation failed at ring: "
                + ", ".join(self.names[u] for u in missing) + " did not reveal the ring nonce "
                "committed to with its keys; the ring is drawn from every keyed worker's nonce, "
                "so that leaving some out cannot choose it")
        self._graph = graph.neighbourhoods(self._nonces, self.n_selected)
        return dict(sorted(self._nonces.items()))

    def neighbours(self, u: int) -> frozenset[int] | set[int]:
        """`u`'s neighbourhood, itself included: all of U1 in Bonawitz's protocol."""
        return self._graph[u] if self.plus else self.u1

    def keys_for(self, u: int) -> dict[int, tuple[bytes, bytes]]:
        """The keys `u` shares with: all of U1's in Bonawitz's protocol, only its
        neighbourhood's under SecAgg+ (once the ring is drawn), so that each worker receives
        O(k) keys, not O(n)."""
        return {v: self._keys[v] for v in sorted(self.neighbours(u))}

    # Phase 1: share keys
    def receive_shares(self, u: int, ciphertexts: dict[int, bytes]) -> None:
        self._check(u, self.u1, self._ciphertexts, "share keys")
        expected = self.neighbours(u) - {u}
        wrong = sorted(v for v, c in ciphertexts.items() if len(c) != CIPHERTEXT_BYTES)
        if set(ciphertexts) != expected:
            self.dropped[u] = (f"shares for workers {sorted(ciphertexts)}, expected "
                               f"{sorted(expected)}")
        elif wrong:
            self.dropped[u] = f"malformed shares for workers {wrong}"
        else:
            self._ciphertexts[u] = ciphertexts

    def routed_shares(self) -> dict[int, dict[int, bytes]]:
        """Closes key sharing: for each worker that shared, the ciphertexts sent to it."""
        sharing = self._close("share keys", self._ciphertexts, self.u1, "shared no keys")
        return {v: {u: self._ciphertexts[u][v] for u in self.neighbours(v) & sharing if u != v}
                for v in sharing}

    # Phase 2: check the shares
    def receive_check(self, u: int, malformed: list[int]) -> None:
        """`malformed`: the workers whose share for `u` did not decrypt or parse."""
        self._check(u, set(self._ciphertexts), self._checked, "check shares")
        self._checked[u] = list(malformed)

    def masking_peers(self) -> list[int]:
        """Closes checking: U2, the workers to mask with. A worker whose share another found
        malformed is dropped before anyone masks with it; a worker that finds the shares of
        more than one peer malformed is dropped itself, its claims ignored, so that one
        worker cannot knock out the others."""
        accused: dict[int, list[int]] = {}
        for victim, senders in sorted(self._checked.items()):
            if len(set(senders)) > 1:
                self.dropped[victim] = (f"claimed that {len(set(senders))} workers sent it "
                                        "malformed shares; one such claim is believed a round")
                continue
            for sender in senders:
                accused.setdefault(sender, []).append(victim)
        for sender, victims in sorted(accused.items()):
            if sender in self._ciphertexts and sender not in self.dropped:
                self.dropped[sender] = (f"sent malformed shares to "
                                        f"{', '.join(self.names[v] for v in sorted(victims))}")
        self.u2 = self._close("check shares", self._checked, set(self._ciphertexts),
                              "did not check its shares")
        return sorted(self.u2)

    # Phase 3: masked input
    def receive_masked(self, u: int, length: int, pieces: Iterable[np.ndarray]) -> None:
        """Adds `u`'s masked vector, `length` words that `pieces` yield in order, to the total.
        A vector of the wrong length drops `u` and is not read."""
        self._check(u, self.u2, self._masked, "masked input")
        if length != self.vector_length:
            self.dropped[u] = (f"sent a masked vector of {length} words, expected "
                               f"{self.vector_length}")
            return
        start = 0
        for piece in pieces:
            if piece.dtype != self.total.dtype or start + piece.size > length:
                raise ValueError(f"pieces of {piece.dtype} past word {start}: not {length} "
                                 f"{self.total.dtype}")
            part = self.total[start:start + piece.size]
            np.add(part, piece, out=part)
            start += piece.size
        if start != length:
            raise ValueError(f"the pieces held {start} words, not the {length} announced")
        self._masked[u] = None

    def summed_masked(self, u: int) -> None:
        """Records that `u`'s whole masked vector is in `total`, added by the caller as it
        streamed in (the caller refuses a vector of the wrong length)."""
        self._check(u, self.u2, self._masked, "masked input")
        self._masked[u] = None

    def unmask_request(self) -> list[int]:
        """Closes masked input: U3, the survivors whose input is summed."""
        self.u3 = self._close("masked input", self._masked, self.u2, "sent no masked input")
        return sorted(self.u3)

    # Phase 4: unmasking
    def receive_unmask(self, u: int, revealed: Revealed) -> None:
        self._check(u, self.u3, self._revealed, "unmasking")
        self._revealed[u] = revealed

    def unmasked_total(self) -> np.ndarray:
        """Closes unmasking: the total with every mask taken off, in place: the uint64 sum
        (mod 2^64) of the encoded inputs of U3."""
        self.u4 = self._close("unmasking", self._revealed, self.u3, "revealed no shares")
        survivors = sorted(self.u3)
        masks = []
        for u in survivors:
            seed = self._reconstruct(u, "self_mask")
            if hashlib.sha256(seed).digest() != self._commitments[u]:
                raise SecAggError(f"secure aggregation failed at unmasking: the shares of "
                                  f"{self.names[u]}'s self mask do not rebuild the seed it "
                                  "committed to; a worker revealed a wrong share")
            masks.append((seed, -1))
        for v in sorted(self.u2 - self.u3):  # take off the masks survivors shared with v
            s_sk = X25519PrivateKey.from_private_bytes(self._reconstruct(v, "mask_key"))
            if s_sk.public_key().public_bytes_raw() != self._keys[v][1]:
                raise SecAggError(f"the shares of {self.names[v]}'s mask key do not match its key")
            masks += [(agree(s_sk, self._keys[u][1], MASK_LABEL + self.context),
                       -pairwise_sign(u, v))
                      for u in survivors if u in self.neighbours(v)]
        accumulate(self.total, [], masks)
        return self.total

    def _reconstruct(self, v: int, kind: str) -> bytes:
        what = f"{self.names[v]}'s {kind.replace('_', ' ')}"
        held = {u: getattr(self._revealed[u], kind) for u in sorted(self.neighbours(v))
                if u in self._revealed}  # only v's neighbourhood holds shares of it
        shares = {u: by_worker[v] for u, by_worker in held.items() if v in by_worker}
        if len(shares) < self.threshold:
            raise SecAggError(f"secure aggregation failed at unmasking: {len(shares)} shares of "
                              f"{what}, at least {self.threshold} needed")
        try:
            return shamir.combine(dict(sorted(shares.items())[:self.threshold]))
        except ValueError:
            raise SecAggError(f"secure aggregation failed at unmasking: the shares of {what} "
                              "are not consistent; a worker revealed a wrong share") from None

    def _check(self, u: int, expected: set[int], received: dict, phase: str) -> None:
        """Refuses a message from a worker not in the round at `phase`, or a second one; the
        round goes on without it."""
        if u not in expected or u in self.dropped:
            name = self.names[u] if 0 <= u < self.n_selected else f"worker {u}"
            raise ValueError(f"{phase}: {name} is not in the round at this phase")
        if u in received:
            raise ValueError(f"{phase}: {self.names[u]} already answered")

    def _dropped_by_reason(self, shown: int = 5) -> str:
        """The dropped workers grouped by why, the most common reason first, `shown` names
        and reasons at most: "3 workers (a, b, c) sent no keys; 1 worker (d) ..."."""
        groups: dict[str, list[str]] = {}
        for u, why in sorted(self.dropped.items()):
            groups.setdefault(why, []).append(self.names[u])
        ordered = sorted(groups.items(), key=lambda group: -len(group[1]))
        parts = [f"{len(names)} worker{'s' if len(names) > 1 else ''} ({', '.join(names[:shown])}"
                 f"{f' and {len(names) - shown} more' if len(names) > shown else ''}): {why}"
                 for why, names in ordered[:shown]]
        rest = sum(len(names) for _, names in ordered[shown:])
        return "; ".join(parts + ([f"{rest} more for other reasons"] if rest else []))

    def _close(self, phase: str, received: dict, expected: Iterable[int], missing: str) -> set[int]:
        """The workers still in after `phase`; fails the round when fewer than the threshold."""
        for u in expected:
            if u not in received and u not in self.dropped:
                self.dropped[u] = f"{missing} (left at {phase})"
        survivors = {u for u in received if u not in self.dropped}
        if len(survivors) < self.floor:
            rule = (f"min_clients, and a neighbourhood's threshold t = {self.threshold}"
                    if self.plus else f"min_clients, and more than secagg_threshold "
                    f"{self.rule.fraction:g} of those selected")
            raise SecAggError(
                f"secure aggregation failed at {phase}: {len(survivors)} of {self.n_selected} "
                f"selected workers remain, at least {self.floor} needed ({rule}); dropped: "
                + self._dropped_by_reason())
        return survivors
