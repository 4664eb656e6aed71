"""Even, hierarchical sampling of opening lines to a per-sector target."""

import random

import pytest

from ultrachat.construction.sampling import allocate_evenly, sample_evenly


def _flat(**counts):
    return {(name,): count for name, count in counts.items()}


def test_water_filling_with_remainder_in_name_order():
    # A runs out at 1; the 11 left split 5/5 over B and C, and the odd one goes to B (sorted first).
    assert allocate_evenly(_flat(A=1, B=10, C=10), 12) == {("A",): 1, ("B",): 6, ("C",): 5}
    # Remainder order is by name, not by input order or size.
    assert allocate_evenly(_flat(C=10, B=10, A=10), 11) == {("A",): 4, ("B",): 4, ("C",): 3}
    assert allocate_evenly(_flat(A=9, B=20, C=30), 40) == {("A",): 9, ("B",): 16, ("C",): 15}
    # Several groups saturate in turn.
    assert allocate_evenly(_flat(A=2, B=3, C=100, D=100), 25) == {("A",): 2, ("B",): 3, ("C",): 10, ("D",): 10}


def test_target_smaller_than_group_count():
    assert allocate_evenly(_flat(A=5, B=5, C=5), 2) == {("A",): 1, ("B",): 1, ("C",): 0}
    # An empty group never receives the remainder.
    assert allocate_evenly(_flat(A=0, B=5, C=5), 1) == {("A",): 0, ("B",): 1, ("C",): 0}


def test_hierarchical_two_levels():
    counts = {
        ("Technology", "AI ethics"): 50,
        ("Technology", "Databases"): 2,
        ("Technology", "Robotics"): 50,
        ("Health", "Diet"): 100,
        ("Arts", "Opera"): 3,
    }
    result = allocate_evenly(counts, 40)
    # Top level: Arts 3, the other 37 split Health 19 / Technology 18 (Health sorts first).
    assert result == {
        ("Technology", "AI ethics"): 8,
        ("Technology", "Databases"): 2,
        ("Technology", "Robotics"): 8,
        ("Health", "Diet"): 19,
        ("Arts", "Opera"): 3,
    }


def test_evenness_is_per_level_not_per_leaf():
    counts = {
        ("topics", "A", "x"): 100,
        ("topics", "A", "y"): 100,
        ("topics", "B", "z"): 100,
        ("materials", "M", "m"): 100,
    }
    result = allocate_evenly(counts, 20)
    assert result[("materials", "M", "m")] == 10
    assert result[("topics", "B", "z")] == 5
    assert result[("topics", "A", "x")] + result[("topics", "A", "y")] == 5


def test_target_at_least_total_and_zero():
    counts = _flat(A=1, B=10, C=0)
    assert allocate_evenly(counts, 11) == counts
    assert allocate_evenly(counts, 1000) == counts
    assert allocate_evenly(counts, 0) == {("A",): 0, ("B",): 0, ("C",): 0}
    assert allocate_evenly({}, 5) == {}


def test_allocation_sum_caps_and_monotonicity_random():
    rnd = random.Random(0)
    for _ in range(40):
        counts = {(rnd.choice("abc"), f"s{i}"): rnd.randrange(0, 12) for i in range(rnd.randrange(1, 9))}
        total = sum(counts.values())
        previous = dict.fromkeys(counts, 0)
        for target in range(total + 3):
            result = allocate_evenly(counts, target)
            assert sum(result.values()) == min(target, total)
            assert all(0 <= result[p] <= counts[p] for p in counts)
            assert all(result[p] >= previous[p] for p in counts), (counts, target)  # growing target only adds
            previous = result


def test_allocate_errors():
    with pytest.raises(ValueError, match="target >= 0"):
        allocate_evenly(_flat(A=1), -1)
    with pytest.raises(ValueError, match="same length"):
        allocate_evenly({("A",): 1, ("B", "x"): 1}, 1)
    with pytest.raises(ValueError, match="same length"):
        allocate_evenly({(): 3}, 1)
    with pytest.raises(ValueError, match="negative"):
        allocate_evenly(_flat(A=-1), 1)


def _rows():
    ids = [f"row-{i}" for i in range(60)]
    groups = [("world", "A")] * 5 + [("world", "B")] * 25 + [("materials", "C")] * 30
    return ids, groups


def test_sample_evenly_respects_allocation():
    ids, groups = _rows()
    chosen = sample_evenly(ids, groups, 20)
    assert chosen == sorted(set(chosen)) and len(chosen) == 20
    per_group = {g: sum(1 for i in chosen if groups[i] == g) for g in set(groups)}
    assert per_group == {("materials", "C"): 10, ("world", "A"): 5, ("world", "B"): 5}


def test_sample_evenly_stable_and_deterministic():
    ids, groups = _rows()
    smaller = sample_evenly(ids, groups, 12, seed=1)
    larger = sample_evenly(ids, groups, 31, seed=1)
    assert set(smaller) < set(larger)
    assert sample_evenly(ids, groups, 12, seed=1) == smaller
    assert sample_evenly(ids, groups, 12, seed=2) != smaller
    # Choice follows ids, not row positions: reversing the input picks the same ids.
    reversed_choice = sample_evenly(ids[::-1], groups[::-1], 12, seed=1)
    assert sorted(ids[::-1][i] for i in reversed_choice) == sorted(ids[i] for i in smaller)
    assert sample_evenly(ids, groups, 100) == list(range(60))
    assert sample_evenly(ids, groups, 0) == []


def test_sample_evenly_errors():
    with pytest.raises(ValueError, match="one group path per id"):
        sample_evenly(["a", "b"], [("x",)], 1)
    with pytest.raises(ValueError, match="target >= 0"):
        sample_evenly(["a"], [("x",)], -3)
