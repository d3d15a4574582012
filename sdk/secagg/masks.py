"""Key agreement and the mask generator: AES-256-CTR keystream viewed as uint64 (or uint32) words."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MASK_LABEL = b"deltaflow secagg mask seed"
SHARE_LABEL = b"deltaflow secagg share key"


def agree(private: X25519PrivateKey, peer_public: bytes, label: bytes) -> bytes:
    """A 32-byte key both ends of an X25519 exchange derive, separated by `label`."""
    shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(shared)


CHUNK = 1 << 16  # words: a chunk, its keystream and the zeros it encrypts stay in L2
THREADS = min(os.cpu_count() or 1, 8)  # AES and numpy release the GIL


def accumulate(out: np.ndarray, addends: list[np.ndarray], masks: list[tuple[bytes, int]],
               threads: int = THREADS, stop: threading.Event | None = None) -> None:
    """out += sum(addends) + sum(sign * PRG(seed) for seed, sign in masks), modulo the word
    (2^64 for uint64 `out`, 2^32 for uint32), where PRG is the AES-256-CTR keystream of the seed
    as words of `out`'s dtype. Streams over cache-sized chunks, so each vector is read once from
    memory, in `threads` contiguous slices at once. Once `stop` is set it gives up between
    chunks, leaving `out` half done."""
    chunks = -(-out.size // CHUNK)
    bounds = [CHUNK * (chunks * i // threads) for i in range(threads)] + [out.size]
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda i: _accumulate_slice(out, addends, masks, bounds[i], bounds[i + 1],
                                                  stop or threading.Event()),
                      range(threads)))


def _accumulate_slice(out: np.ndarray, addends: list[np.ndarray], masks: list[tuple[bytes, int]],
                      begin: int, end: int, stop: threading.Event) -> None:
    counter = (begin * out.itemsize // 16).to_bytes(16, "big")  # begin: a multiple of CHUNK
    streams = [(Cipher(algorithms.AES(seed), modes.CTR(counter)).encryptor(), sign)
               for seed, sign in masks]
    zeros = memoryview(bytes(out.itemsize * CHUNK))
    keystream = np.empty(CHUNK + 16 // out.itemsize, dtype=out.dtype)  # a block's slack
    for start in range(begin, end, CHUNK):
        if stop.is_set():
            return
        part = out[start:min(start + CHUNK, end)]
        for addend in addends:
            part += addend[start:start + part.size]
        for stream, sign in streams:
            stream.update_into(zeros[:out.itemsize * part.size], memoryview(keystream).cast("B"))
            if sign > 0:
                part += keystream[:part.size]
            else:
                part -= keystream[:part.size]


def pairwise_sign(u: int, v: int) -> int:
    """+1 when worker `u` adds the mask it shares with `v`, -1 when it subtracts it."""
    return 1 if v > u else -1
