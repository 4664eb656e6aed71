"""Drop exact and near duplicate opening lines before they are spent on dialogue generation.

LLM-written questions repeat themselves, and a repeated opening wastes a whole multi-turn dialogue.
Workers compute per-row keys (`exact_key`, `near_key`, `MinHasher.band_keys`) in parallel; the driver
then runs `dedup_mask` over millions of rows at once, so the mask is plain vectorised numpy.
Rows arrive in priority order: the earliest row of a duplicate group is the one kept.
"""

from __future__ import annotations

import hashlib
import logging
import unicodedata
from dataclasses import asdict, dataclass

import numpy as np

logger = logging.getLogger(__name__)

_MERSENNE_61 = (1 << 61) - 1
_MASK_30 = np.uint64((1 << 30) - 1)
_MASK_31 = np.uint64((1 << 31) - 1)


def _hash64(data: bytes) -> int:
    """Signed int64 from blake2b: stable across processes, unlike Python's salted `hash`."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)


def normalize_text(text: str) -> str:
    """NFKC, casefold, drop punctuation and symbols, collapse whitespace: "What is AI?" == "what is  AI"."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    kept = "".join(ch for ch in folded if unicodedata.category(ch)[0] not in "PS")
    return " ".join(kept.split())


def exact_key(text: str) -> int:
    return _hash64(text.strip().encode("utf-8"))


def near_key(text: str) -> int:
    return _hash64(normalize_text(text).encode("utf-8"))


def _mulmod61(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(a * x) mod 2**61-1 for uint64 arrays below 2**61, split into 31-bit limbs so nothing overflows."""
    a1, a0 = a >> np.uint64(31), a & _MASK_31
    x1, x0 = x >> np.uint64(31), x & _MASK_31
    mid = a1 * x0 + a0 * x1  # < 2**62; mid * 2**31 folds into (mid >> 30) + (mid & 2**30-1) * 2**31
    # 2**62 == 2 and 2**61 == 1 (mod p); every term is < 2**62, so the sum stays below 2**64.
    total = (a1 * x1 << np.uint64(1)) + (mid >> np.uint64(30)) + ((mid & _MASK_30) << np.uint64(31)) + a0 * x0
    return total % np.uint64(_MERSENNE_61)


class MinHasher:
    """Locality-sensitive band keys: two texts share a band key with high probability when their
    word-shingle Jaccard similarity is above about (1/bands)**(1/rows), rows = num_perm // bands
    (~0.5 for the default 16 bands x 4 rows).

    Keys are deterministic across runs and processes for a given seed and numpy version (the
    permutations come from `np.random.default_rng(seed)`), so compute all rows of one dedup pass
    with the same environment.
    """

    def __init__(self, num_perm: int = 64, bands: int = 16, shingle_words: int = 3, seed: int = 0):
        if num_perm <= 0 or bands <= 0 or num_perm % bands:
            raise ValueError(
                f"near_dedup.num_perm ({num_perm}) must be a positive multiple of near_dedup.bands ({bands}); "
                "fix: e.g. num_perm: 64 with bands: 16 (4 rows per band, Jaccard threshold ~0.5)"
            )
        if shingle_words < 1:
            raise ValueError(f"near_dedup.shingle_words ({shingle_words}) must be >= 1; fix: use e.g. 3")
        self.num_perm, self.bands, self.rows = num_perm, bands, num_perm // bands
        self.shingle_words = shingle_words
        rng = np.random.default_rng(seed)
        # Universal hashing (a*x + b) mod p; a != 0 so each pair is a permutation of [0, p).
        self._a = rng.integers(1, _MERSENNE_61, size=(num_perm, 1), dtype=np.uint64)
        self._b = rng.integers(0, _MERSENNE_61, size=(num_perm, 1), dtype=np.uint64)

    def shingles(self, text: str) -> list[str]:
        words = normalize_text(text).split()
        if len(words) < self.shingle_words:
            return [" ".join(words)]  # short (or empty) text: the whole text is the one shingle
        n = self.shingle_words
        return [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]

    def signature(self, text: str) -> np.ndarray:
        """MinHash signature, shape (num_perm,) uint64."""
        digests = b"".join(hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest() for s in self.shingles(text))
        x = np.frombuffer(digests, dtype="<u8").astype(np.uint64) % np.uint64(_MERSENNE_61)
        hashed = (_mulmod61(self._a, x[None, :]) + self._b) % np.uint64(_MERSENNE_61)
        return hashed.min(axis=1)

    def band_keys(self, text: str) -> np.ndarray:
        """One int64 per band, shape (bands,); the band index is hashed in so bands never collide."""
        bands = self.signature(text).astype("<u8").reshape(self.bands, self.rows)
        keys = [_hash64(i.to_bytes(4, "little") + band.tobytes()) for i, band in enumerate(bands)]
        return np.array(keys, dtype=np.int64)


@dataclass
class DedupCounts:
    exact: int
    near: int
    minhash: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _seen_earlier(keys: np.ndarray) -> np.ndarray:
    """True where the same key first occurred at an earlier row."""
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return first[inverse.reshape(-1)] < np.arange(len(keys))


def dedup_mask(
    exact: np.ndarray, near: np.ndarray | None = None, bands: np.ndarray | None = None
) -> tuple[np.ndarray, DedupCounts]:
    """Boolean keep mask over rows in priority order, plus how many rows each rule removed.

    A row is an exact dup if any earlier row has its exact key; otherwise a near dup if any earlier
    row has its near key; otherwise a minhash dup if, in any band, an earlier row has its key. Each
    removed row counts once, under the first rule that applies. "Earlier row" means any earlier row,
    kept or removed (simple bucket semantics): with A ~ B ~ C but A !~ C, both B and C go.
    """
    exact = np.asarray(exact)
    n = len(exact)
    if exact.ndim != 1:
        raise ValueError(f"exact keys must be 1-D, got shape {exact.shape}; fix: pass one key per row")
    if near is not None and np.shape(near) != (n,):
        raise ValueError(f"near keys have shape {np.shape(near)}, expected ({n},); fix: one near key per row")
    if bands is not None and (np.ndim(bands) != 2 or np.shape(bands)[0] != n):
        raise ValueError(
            f"band keys have shape {np.shape(bands)}, expected ({n}, bands); fix: stack one band_keys() row per row"
        )
    is_exact = _seen_earlier(exact)
    dup = is_exact.copy()
    is_near = np.zeros(n, dtype=bool)
    if near is not None:
        is_near = _seen_earlier(np.asarray(near)) & ~dup
        dup |= is_near
    is_minhash = np.zeros(n, dtype=bool)
    if bands is not None:
        band_arr = np.asarray(bands)
        for column in range(band_arr.shape[1]):  # few bands, many rows: loop bands, vectorise rows
            is_minhash |= _seen_earlier(band_arr[:, column])
        is_minhash &= ~dup
        dup |= is_minhash
    counts = DedupCounts(exact=int(is_exact.sum()), near=int(is_near.sum()), minhash=int(is_minhash.sum()))
    logger.info("dedup: %d rows, %d kept, removed %s", n, n - int(dup.sum()), counts.as_dict())
    return ~dup, counts
