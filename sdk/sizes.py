"""Sizes in bytes as people write them ("512MiB", "16GiB") and as messages show them."""

from __future__ import annotations

import re

KiB = 1024
MiB = 1024**2
GiB = 1024**3

_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "k": KiB, "m": MiB, "g": GiB, "t": 1024**4,
    "kib": KiB, "mib": MiB, "gib": GiB, "tib": 1024**4,
}


def parse_size(value: int | str | None) -> int | None:
    """Bytes from an int or a string like "512MiB", "8GiB", "2GB" (None stays None)."""
    if value is None or isinstance(value, int):
        if isinstance(value, int) and value < 0:
            raise ValueError(f"a size cannot be negative: {value}")
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {value!r} (try 512MiB, 8GiB or a number of bytes)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def show_size(size: int) -> str:
    """`size` bytes in the largest binary unit it fills: "300 MiB", "1.03 GiB", "512 bytes"."""
    for unit, name in ((GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB")):
        if size >= unit:
            return f"{size / unit:.2f}".rstrip("0").rstrip(".") + f" {name}"
    return f"{size} bytes"
