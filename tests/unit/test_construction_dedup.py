"""Opening-line dedup: normalisation, stable keys, MinHash band keys and the vectorised keep mask."""

import hashlib
import random

import numpy as np
import pytest

from ultrachat.construction.dedup import (
    DedupCounts,
    MinHasher,
    _mulmod61,
    dedup_mask,
    exact_key,
    near_key,
    normalize_text,
)

QUESTION = "How do solar panels convert sunlight into electricity and why does their efficiency drop in heat?"


def _keys(texts, hasher=None):
    hasher = hasher or MinHasher()
    exact = np.array([exact_key(t) for t in texts], dtype=np.int64)
    near = np.array([near_key(t) for t in texts], dtype=np.int64)
    bands = np.stack([hasher.band_keys(t) for t in texts])
    return exact, near, bands


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("What is AI?", "what is ai"),
        ("what is  AI", "what is ai"),
        ("  Hello,\tWORLD!!\n", "hello world"),
        ("Ｆｕｌｌｗｉｄｔｈ ＡＩ", "fullwidth ai"),  # NFKC folds fullwidth forms
        ("Straße", "strasse"),  # casefold, not lower
        ("Price: $5 + 10% — really?", "price 5 10 really"),  # symbols (S*) go too
        ("¿Qué tal?", "qué tal"),
        ("?!...", ""),
    ],
)
def test_normalize_text(raw, expected):
    assert normalize_text(raw) == expected


def test_exact_key_is_blake2b_of_stripped_text():
    digest = hashlib.blake2b(b"What is AI?", digest_size=8).digest()
    assert exact_key("  What is AI?\n") == int.from_bytes(digest, "little", signed=True)
    assert exact_key("What is AI?") != exact_key("what is AI?")
    assert near_key("What is AI?") == near_key("what is  AI") != near_key("what is ML")
    assert -(2**63) <= exact_key("x") < 2**63


def test_mulmod61_matches_python_ints():
    p = (1 << 61) - 1
    rnd = random.Random(7)
    a = [p - 1, 1, (1 << 31) - 1, 1 << 60] + [rnd.randrange(p) for _ in range(200)]
    x = [p - 1, p - 1, 1 << 31, 1 << 60] + [rnd.randrange(p) for _ in range(200)]
    got = _mulmod61(np.array(a, dtype=np.uint64), np.array(x, dtype=np.uint64))
    assert got.tolist() == [(ai * xi) % p for ai, xi in zip(a, x)]


def test_minhasher_validation_names_config_keys():
    with pytest.raises(ValueError, match=r"near_dedup\.num_perm.*near_dedup\.bands.*fix"):
        MinHasher(num_perm=60, bands=16)
    with pytest.raises(ValueError, match="near_dedup.num_perm"):
        MinHasher(num_perm=0, bands=16)
    with pytest.raises(ValueError, match="shingle_words"):
        MinHasher(shingle_words=0)
    assert MinHasher(num_perm=128, bands=32).rows == 4


def test_band_keys_shape_and_stability():
    first, second = MinHasher(seed=3), MinHasher(seed=3)
    keys = first.band_keys(QUESTION)
    assert keys.shape == (16,) and keys.dtype == np.int64
    assert np.array_equal(keys, second.band_keys(QUESTION))
    assert len(set(keys.tolist())) == 16  # band index is mixed in
    assert not np.array_equal(keys, MinHasher(seed=4).band_keys(QUESTION))
    # Normalisation happens before shingling.
    assert np.array_equal(keys, first.band_keys(QUESTION.upper().replace("?", "")))


def test_short_and_empty_texts():
    hasher = MinHasher()
    assert hasher.shingles("Why sky?") == ["why sky"]
    assert hasher.shingles("") == [""]
    assert np.array_equal(hasher.band_keys(""), hasher.band_keys("?!"))
    assert not np.array_equal(hasher.band_keys("Why sky?"), hasher.band_keys("Why sea?"))


def test_minhash_catches_one_word_change_but_not_unrelated_questions():
    hasher = MinHasher()
    base = hasher.band_keys(QUESTION)
    edited = hasher.band_keys(QUESTION.replace("drop", "fall"))
    assert (base == edited).any()
    unrelated = [
        "What are the main causes of the French Revolution and how did it change European politics?",
        "Can you recommend a beginner friendly recipe for sourdough bread with a crispy crust?",
        "How should a small startup structure its first employee stock option plan fairly?",
        "What is the difference between a virus and a bacterium when it comes to treatment?",
    ]
    for text in unrelated:
        assert not (base == hasher.band_keys(text)).any(), text


def test_dedup_mask_categories_and_counts():
    texts = [
        QUESTION,  # 0 kept
        QUESTION,  # 1 exact dup of 0
        "  " + QUESTION + "\n",  # 2 exact (key strips whitespace)
        QUESTION.lower().replace("?", "."),  # 3 near dup of 0
        QUESTION.replace("drop", "fall"),  # 4 minhash dup of 0
        "Can you recommend a beginner friendly recipe for sourdough bread?",  # 5 kept
        "can you recommend a beginner friendly recipe for sourdough bread",  # 6 near dup of 5
    ]
    keep, counts = dedup_mask(*_keys(texts))
    assert keep.dtype == bool
    assert keep.tolist() == [True, False, False, False, False, True, False]
    assert counts == DedupCounts(exact=2, near=2, minhash=1)
    assert counts.as_dict() == {"exact": 2, "near": 2, "minhash": 1}


def test_dedup_mask_optional_stages_and_priority():
    exact = np.array([5, 7, 5, 9], dtype=np.int64)
    near = np.array([1, 1, 1, 2], dtype=np.int64)
    keep, counts = dedup_mask(exact)
    assert keep.tolist() == [True, True, False, True] and counts.as_dict() == {"exact": 1, "near": 0, "minhash": 0}
    keep, counts = dedup_mask(exact, near)
    assert keep.tolist() == [True, False, False, True]
    assert (counts.exact, counts.near) == (1, 1)  # row 2 counts as exact only


def test_dedup_mask_bucket_semantics_chain():
    """Earlier rows count even when removed: B matches A in band 0, C matches B in band 1 only."""
    exact = np.arange(3, dtype=np.int64)
    bands = np.array([[10, 20], [10, 21], [11, 21]], dtype=np.int64)
    keep, counts = dedup_mask(exact, bands=bands)
    assert keep.tolist() == [True, False, False]
    assert counts.minhash == 2


def test_dedup_mask_first_occurrence_wins_regardless_of_key_order():
    exact = np.array([9, 3, 9, 3, 1, 9], dtype=np.int64)
    keep, _ = dedup_mask(exact)
    assert keep.tolist() == [True, True, False, False, True, False]


def test_dedup_mask_empty_and_shape_errors():
    keep, counts = dedup_mask(np.array([], dtype=np.int64), np.array([], dtype=np.int64), np.zeros((0, 16), np.int64))
    assert keep.shape == (0,) and counts.as_dict() == {"exact": 0, "near": 0, "minhash": 0}
    with pytest.raises(ValueError, match="near keys.*fix"):
        dedup_mask(np.zeros(3, np.int64), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="band keys.*fix"):
        dedup_mask(np.zeros(3, np.int64), bands=np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="exact keys.*fix"):
        dedup_mask(np.zeros((3, 2), np.int64))
