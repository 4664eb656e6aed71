"""Cut each sector's opening lines down to its target, spread evenly across groups.

Candidate counts are lopsided (some meta-topics or material types yield far more lines than others),
so a uniform sample would mirror that skew. Instead the target is split evenly over the top-level
groups, then evenly over their sub-groups, and so on (water-filling: a group that runs out hands its
unused share to the others). Row choice inside a group is a stable hash order, so raising the target
only adds rows and the same seed always picks the same rows.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

logger = logging.getLogger(__name__)

GroupPath = tuple[str, ...]


def _water_fill(totals: Mapping[str, int], target: int) -> dict[str, int]:
    """Split `target` evenly over groups capped at their totals.

    Groups smaller than the even share take everything and the rest is re-split among the others.
    A remainder that cannot split evenly gives one extra each to the unsaturated groups in sorted
    name order (A:1, B:10, C:10 with target 12 -> A 1, B 6, C 5).
    """
    if target >= sum(totals.values()):
        return dict(totals)
    quota: dict[str, int] = {}
    remaining = target
    by_size = sorted(totals, key=lambda name: (totals[name], name))
    open_groups: list[str] = []
    for i, name in enumerate(by_size):
        # Sorted ascending, so once one group exceeds the share every later group does too.
        if totals[name] <= remaining // (len(by_size) - i):
            quota[name] = totals[name]
            remaining -= totals[name]
        else:
            open_groups = sorted(by_size[i:])
            break
    share, extra = divmod(remaining, len(open_groups))
    for rank, name in enumerate(open_groups):
        quota[name] = share + (1 if rank < extra else 0)
    return quota


def _allocate(counts: Mapping[GroupPath, int], target: int, depth: int) -> dict[GroupPath, int]:
    if depth == len(next(iter(counts))):
        return {path: target for path in counts}  # one leaf left; target never exceeds its count here
    children: dict[str, dict[GroupPath, int]] = defaultdict(dict)
    for path, count in counts.items():
        children[path[depth]][path] = count
    quotas = _water_fill({name: sum(sub.values()) for name, sub in children.items()}, target)
    allocation: dict[GroupPath, int] = {}
    for name, sub in children.items():
        allocation.update(_allocate(sub, quotas[name], depth + 1))
    return allocation


def allocate_evenly(counts: Mapping[tuple[str, ...], int], target: int) -> dict[tuple[str, ...], int]:
    """How many candidates to take from each leaf group so `target` is spread evenly, level by level.

    `counts` maps a group path such as ("topics", "Technology", "AI ethics") to its candidate count;
    all paths have the same length. The result sums to exactly min(target, total candidates).
    """
    if target < 0:
        raise ValueError(f"sampling target is {target}; fix: set a target >= 0 (0 keeps nothing)")
    if not counts:
        return {}
    depths = {len(path) for path in counts}
    if len(depths) != 1 or 0 in depths:
        raise ValueError(
            f"group paths have lengths {sorted(depths)}; fix: give every row a group path of the same length >= 1"
        )
    negative = [path for path, count in counts.items() if count < 0]
    if negative:
        raise ValueError(f"group {negative[0]} has a negative count; fix: counts must be >= 0")
    return _allocate(counts, target, 0)


def _order_key(seed: int, row_id: str) -> bytes:
    return hashlib.blake2b(f"{seed}\x00{row_id}".encode("utf-8"), digest_size=8).digest()


def sample_evenly(ids: Sequence[str], groups: Sequence[tuple[str, ...]], target: int, seed: int = 0) -> list[int]:
    """Row indices (ascending) of an even sample of `target` rows; `groups[i]` is row i's group path.

    Within a group the rows with the smallest blake2b(f"{seed}\\x00{id}") win, so a larger target
    yields a superset of a smaller one and the same seed gives the same rows.
    """
    if len(ids) != len(groups):
        raise ValueError(
            f"got {len(ids)} ids but {len(groups)} group paths; fix: pass one group path per id, in the same order"
        )
    allocation = allocate_evenly(Counter(tuple(g) for g in groups), target)
    members: dict[GroupPath, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        members[tuple(group)].append(index)
    chosen: list[int] = []
    for group, indices in members.items():
        # Index breaks ties between equal ids so the order never depends on dict or sort stability.
        indices.sort(key=lambda i: (_order_key(seed, ids[i]), i))
        chosen.extend(indices[: allocation[group]])
    logger.debug("sampled %d of %d rows over %d groups", len(chosen), len(ids), len(members))
    return sorted(chosen)
