"""Record ids and source positions: what resume, de-duplication and per-call seeds key on."""

from __future__ import annotations

import hashlib


def stable_id(sector: str, text: str) -> str:
    """Same opening, same id, on every run."""
    return hashlib.sha1(f"{sector}\x00{text}".encode("utf-8")).hexdigest()[:20]


def derived_seed(base: int, *parts: object) -> int:
    """A 31-bit seed from a base seed and the call's identity: reproducible, yet different for every
    dialogue, turn and call."""
    digest = hashlib.sha256(":".join(str(p) for p in (base, *parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def source_order(source: str) -> tuple:
    """Sort key of a ``file:12`` / ``file#3`` source: line order within a file, not string order."""
    for sep in (":", "#"):
        path, _, number = source.rpartition(sep)
        if number.isdigit():
            return (path, int(number), source)
    return (source, -1, source)
