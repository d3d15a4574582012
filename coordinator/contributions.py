"""Workers' uploads folded into a running sum as their bytes arrive.

The coordinator never holds an upload: each chunk is added into the sum the moment it comes, so
memory holds one sum whatever the number of workers, and nothing is written to disk. A worker
whose upload breaks off (or is refused, or comes too late) has then left part of itself in the
sum; the sum says so (`tainted`) and the round collects the complete uploads again into a
restarted sum, which holds no trace of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


class StreamedSum:
    """A sum that uploads are folded into piece by piece; subclasses say how a piece adds."""

    def __init__(self) -> None:
        self.generation = 0  # uploads begun before a restart can no longer add
        self.tainted = False  # part of an upload that did not complete is in the sum

    def restart(self) -> None:
        """Empties the sum; uploads in flight can no longer add to it."""
        self.generation += 1
        self.tainted = False
        self.zero()

    def zero(self) -> None:
        raise NotImplementedError

    def fold(self, offset: int, data: memoryview, weight: int) -> int:
        """Adds the bytes of an upload found at `offset`, times `weight`; returns how many it
        took: whole values only (at most one value's bytes are left over)."""
        raise NotImplementedError

    def completed(self, weight: int) -> None:
        """An upload of `weight` is in the sum, whole."""


class WordSum(StreamedSum):
    """A sum of vectors of little-endian words, modulo 2^64 (or 2^32: `words`' dtype, uint64
    or uint32); secure aggregation's."""

    def __init__(self, words: np.ndarray) -> None:
        super().__init__()
        self.words = words
        self._wire = words.dtype.newbyteorder("<")

    def zero(self) -> None:
        self.words.fill(0)

    def fold(self, offset: int, data: memoryview, weight: int) -> int:
        size = self._wire.itemsize
        taken = len(data) - len(data) % size
        words = np.frombuffer(data[:taken], dtype=self._wire)
        part = self.words[offset // size:offset // size + words.size]
        np.add(part, words, out=part)
        return taken


class Contribution:
    """One worker's upload of `size` bytes into `total` (a registry Receiver).

    `weigh(meta)` checks the upload's meta before any byte is added and gives the weight its
    values are multiplied by; ValueError refuses the upload. The answer is the meta.
    """

    def __init__(self, total: StreamedSum, size: int, weigh: Callable[[Any], int]) -> None:
        self.total = total
        self.size = size
        self.weigh = weigh
        self.generation = total.generation
        self.state = "receiving"  # then "finished" (whole, counted), or "discarded"
        self.weight = 0
        self.meta: Any = None
        self.offset = 0
        self.carry = b""  # bytes of a value split between two chunks

    def begin(self, meta: Any) -> None:
        self.weight = self.weigh(meta)
        self.meta = meta

    def write(self, chunk: bytes) -> None:
        self._check_receiving()
        if self.offset + len(self.carry) + len(chunk) > self.size:
            raise ValueError(f"it sent more than the {self.size} bytes expected")
        data = memoryview(self.carry + chunk if self.carry else chunk)
        while data:
            taken = self.total.fold(self.offset, data, self.weight)
            if not taken:
                break
            self.offset += taken
            data = data[taken:]
        self.carry = bytes(data)

    def finish(self) -> Any:
        self._check_receiving()
        if self.offset != self.size:
            raise ValueError(f"it sent {self.offset + len(self.carry)} bytes where "
                             f"{self.size} were expected")
        self.total.completed(self.weight)
        self.state = "finished"
        return self.meta

    def discard(self) -> None:
        """The upload will not be summed (even if finished: nobody took the answer); if any of
        it is in the sum, the sum is tainted."""
        if (self.state != "discarded" and self.offset
                and self.generation == self.total.generation):
            self.total.tainted = True
        self.state = "discarded"

    def _check_receiving(self) -> None:
        if self.state != "receiving" or self.generation != self.total.generation:
            raise ValueError("the round no longer takes this upload")
