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


def expand(seed: bytes, length: int) -> np.ndarray:
    """`length` pseudorandom uint64 words from a 32-byte seed, at the speed of AES-NI."""
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    return np.frombuffer(encryptor.update(bytes(8 * length)), dtype=np.uint64)


def pairwise_sign(u: int, v: int) -> int:
    """+1 when worker `u` adds the mask it shares with `v`, -1 when it subtracts it."""
    return 1 if v > u else -1
