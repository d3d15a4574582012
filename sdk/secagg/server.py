"""The coordinator's side: relays what it cannot read, tracks who is still in, unmasks the sum."""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from . import fixedpoint, shamir
from .client import CIPHERTEXT_BYTES, Revealed, SecAggError, threshold
from .masks import MASK_LABEL, accumulate, agree, pairwise_sign

KEY_BYTES = 32


class SecAggServer:
    """One round over workers 0..n_selected-1. Each phase's messages go to `receive_*`; the
    method that hands out the next phase's request closes the phase. `dropped` names every
    worker that left and why."""

    def __init__(self, n_selected: int, min_clients: int, precision: int, vector_length: int):
        self.n_selected = n_selected
        self.threshold = threshold(min_clients, n_selected)
        self.precision = precision
        self.vector_length = vector_length
        self.dropped: dict[int, str] = {}
        self.u1: set[int] = set()  # advertised keys
        self.u2: set[int] = set()  # shared keys
        self.u3: set[int] = set()  # sent a masked input that is summed
        self.u4: set[int] = set()  # revealed shares
        self._keys: dict[int, tuple[bytes, bytes]] = {}
        self._ciphertexts: dict[int, dict[int, bytes]] = {}
        self._vectors: dict[int, np.ndarray] = {}
        self._malformed: dict[int, list[int]] = {}  # sender -> workers it sent bad shares
        self._revealed: dict[int, Revealed] = {}

    # Phase 0: advertise keys
    def receive_keys(self, u: int, c_pk: bytes, s_pk: bytes) -> None:
        self._check(u, set(range(self.n_selected)), self._keys, "advertise")
        if len(c_pk) != KEY_BYTES or len(s_pk) != KEY_BYTES:
            self.dropped[u] = f"advertised keys of {len(c_pk)} and {len(s_pk)} bytes"
        else:
            self._keys[u] = (c_pk, s_pk)

    def public_keys(self) -> dict[int, tuple[bytes, bytes]]:
        """Closes advertising: the keys of U1, for every worker in it."""
        self.u1 = self._close("advertise", self._keys, range(self.n_selected), "sent no keys")
        return dict(self._keys)

    # Phase 1: share keys
    def receive_shares(self, u: int, ciphertexts: dict[int, bytes]) -> None:
        self._check(u, self.u1, self._ciphertexts, "share keys")
        expected = self.u1 - {u}
        wrong = sorted(v for v, c in ciphertexts.items() if len(c) != CIPHERTEXT_BYTES)
        if set(ciphertexts) != expected:
            self.dropped[u] = f"shares for workers {sorted(ciphertexts)}, expected {sorted(expected)}"
        elif wrong:
            self.dropped[u] = f"malformed shares for workers {wrong}"
        else:
            self._ciphertexts[u] = ciphertexts

    def routed_shares(self) -> dict[int, dict[int, bytes]]:
        """Closes key sharing: for each worker in U2, the ciphertexts sent to it by U2."""
        self.u2 = self._close("share keys", self._ciphertexts, self.u1, "shared no keys")
        return {v: {u: self._ciphertexts[u][v] for u in self.u2 if u != v} for v in self.u2}

    # Phase 2: masked input
    def receive_masked(self, u: int, vector: np.ndarray, malformed: list[int]) -> None:
        self._check(u, self.u2, self._vectors, "masked input")
        if vector.dtype != np.uint64 or vector.shape != (self.vector_length,):
            self.dropped[u] = (f"masked vector of {vector.dtype} {vector.shape}, expected "
                               f"uint64 ({self.vector_length},)")
            return
        self._vectors[u] = vector
        for sender in malformed:
            self._malformed.setdefault(sender, []).append(u)

    def unmask_request(self) -> list[int]:
        """Closes masked input: U3, the survivors whose input is summed, to send to each of them.
        A worker named for a malformed share is dropped even if its vector arrived."""
        for sender, victims in self._malformed.items():
            if sender in self.u2:
                self._vectors.pop(sender, None)
                self.dropped[sender] = f"sent malformed shares to workers {sorted(victims)}"
        self.u3 = self._close("masked input", self._vectors, self.u2, "sent no masked input")
        return sorted(self.u3)

    # Phase 3: unmasking
    def receive_unmask(self, u: int, revealed: Revealed) -> None:
        self._check(u, self.u3, self._revealed, "unmasking")
        self._revealed[u] = revealed

    def result(self) -> np.ndarray:
        """Closes unmasking: the float64 sum of the inputs of U3."""
        self.u4 = self._close("unmasking", self._revealed, self.u3, "revealed no shares")
        survivors = sorted(self.u3)
        masks = [(self._reconstruct(u, "self_mask"), -1) for u in survivors]
        for v in sorted(self.u2 - self.u3):  # take off the masks survivors shared with v
            s_sk = X25519PrivateKey.from_private_bytes(self._reconstruct(v, "mask_key"))
            if s_sk.public_key().public_bytes_raw() != self._keys[v][1]:
                raise SecAggError(f"the shares of worker {v}'s mask key do not match its key")
            masks += [(agree(s_sk, self._keys[u][1], MASK_LABEL), -pairwise_sign(u, v))
                      for u in survivors]
        total = np.zeros(self.vector_length, dtype=np.uint64)
        accumulate(total, [self._vectors[u] for u in survivors], masks)
        return fixedpoint.decode(total, self.precision)

    def _reconstruct(self, v: int, kind: str) -> bytes:
        shares = {u: getattr(r, kind)[v] for u, r in self._revealed.items()
                  if v in getattr(r, kind)}
        if len(shares) < self.threshold:
            raise SecAggError(f"secure aggregation failed at unmasking: {len(shares)} shares of "
                              f"worker {v}'s {kind.replace('_', ' ')}, at least "
                              f"{self.threshold} needed")
        return shamir.combine(dict(sorted(shares.items())[:self.threshold]))

    def _check(self, u: int, expected: set[int], received: dict, phase: str) -> None:
        """Refuses a message from a worker not in the round at `phase`, or a second one; the
        round goes on without it."""
        if u not in expected or u in self.dropped:
            raise ValueError(f"{phase}: worker {u} is not in the round at this phase")
        if u in received:
            raise ValueError(f"{phase}: worker {u} already answered")

    def _close(self, phase: str, received: dict, expected, missing: str) -> set[int]:
        """The workers still in after `phase`; fails the round when fewer than the threshold."""
        for u in expected:
            if u not in received and u not in self.dropped:
                self.dropped[u] = f"{missing} (left at {phase})"
        survivors = {u for u in received if u not in self.dropped}
        if len(survivors) < self.threshold:
            raise SecAggError(
                f"secure aggregation failed at {phase}: {len(survivors)} of {self.n_selected} "
                f"selected workers remain, at least {self.threshold} needed; dropped: "
                + "; ".join(f"{u}: {why}" for u, why in sorted(self.dropped.items())))
        return survivors
