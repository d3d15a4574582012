"""Key agreement and the mask generator: AES-256-CTR keystream viewed as uint64."""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MASK_LABEL = b"deltaflow secagg mask seed"
SHARE_LABEL = b"deltaflow secagg share key"


def agree(private: X25519PrivateKey, peer_public: bytes, label: bytes) -> bytes:
    """A 32-byte key both ends of an X25519 exchange derive, separated by `label`."""
    shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(shared)


class Expander:
    """Expands 32-byte seeds into masks of `length` uint64 words at the speed of AES-NI, writing
    each into the same buffer: a mask is valid until the next call."""

    def __init__(self, length: int):
        self.length = length
        self._zeros = bytes(8 * length)
        self._out = np.empty(length + 2, dtype=np.uint64)  # update_into wants a block's slack

    def __call__(self, seed: bytes) -> np.ndarray:
        encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
        encryptor.update_into(self._zeros, memoryview(self._out).cast("B"))
        return self._out[:self.length]


def pairwise_sign(u: int, v: int) -> int:
    """+1 when worker `u` adds the mask it shares with `v`, -1 when it subtracts it."""
    return 1 if v > u else -1
