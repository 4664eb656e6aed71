"""The dialogue stage's plan: which opening lines still need a dialogue, from ids and sources only.

Every opening line gets exactly one id; ids already in the output are done (failed ones too unless
``retry_failed``); a duplicated id runs once, from its first line in source order (file, then line
number). The plan is columnar (Arrow) on the driver, and what travels to the filtering tasks is a
`HashedSet` of the chosen sources (16 bytes each), so 1.5M openings plan in well under a GiB on the
driver and ~24 MB per task (bench/resume_plan.py).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ultrachat.compaction import read_records
from ultrachat.generation.records import DIALOGUE_SCHEMA
from ultrachat.hashed_set import HashedSet

logger = logging.getLogger(__name__)

_COLUMNS = ["id", "source", "invalid", "sector"]
_WARN_INVALID = 20


@dataclass
class DialoguePlan:
    todo: pa.Table  # id, source, sector of every line to run, in source order
    retried: set[str]  # ids whose failed records a retry replaces
    lines: Counter = field(default_factory=Counter)  # valid_lines, invalid_lines, duplicate_lines
    planned: int = 0
    prior: Counter = field(default_factory=Counter)  # full status -> count of the planned ids already done

    def counts(self) -> dict:
        return {**{k: self.lines[k] for k in ("valid_lines", "invalid_lines", "duplicate_lines")},
                "planned": self.planned, "already_done": self.planned - self.todo.num_rows,
                "retried_failed": len(self.retried), "to_run": self.todo.num_rows}

    def wanted_sources(self) -> HashedSet:
        return HashedSet(self.todo["source"].to_pylist())


def plan_dialogues(openings, out_dir: str, limit: int | None, retry_failed: bool) -> DialoguePlan:
    """Every id not yet in ``out_dir``'s records (or failed there), with the source line to run it from.
    ``openings``: a Dataset of opening rows (generation/openings.py)."""
    batches = openings.select_columns(_COLUMNS).iter_batches(batch_size=65536, batch_format="pyarrow")
    return plan_from_table(pa.concat_tables([pa.table({c: pa.array([], pa.string()) for c in _COLUMNS}),
                                             *(b.select(_COLUMNS) for b in batches)]),
                           out_dir, limit, retry_failed)


def plan_from_table(table: pa.Table, out_dir: str, limit: int | None, retry_failed: bool) -> DialoguePlan:
    """`plan_dialogues` on the openings' id, source, invalid and sector columns."""
    invalid = pc.not_equal(table["invalid"], "")
    lines = Counter(invalid_lines=pc.sum(invalid).as_py() or 0)
    lines["valid_lines"] = table.num_rows - lines["invalid_lines"]
    for row in table.filter(invalid).slice(0, _WARN_INVALID).to_pylist():
        logger.warning("skipping opening line %s: %s", row["source"], row["invalid"])
    table = table.append_column("order", source_ranks(table["source"]))
    firsts = table.group_by("id", use_threads=False).aggregate([("order", "min")])
    lines["duplicate_lines"] = table.num_rows - firsts.num_rows
    chosen = table.filter(pc.is_in(table["order"], value_set=firsts["order_min"])).sort_by("order")
    if limit is not None:
        chosen = chosen.slice(0, limit)
    done, failed_status = _finished(out_dir, retry_failed)
    is_done = pc.is_in(chosen["id"], value_set=done)
    todo = chosen.filter(pc.invert(is_done)).select(["id", "source", "sector"])
    prior = Counter(failed_status.get(i, "done") for i in chosen.filter(is_done)["id"].to_pylist())
    retried = set(failed_status) & set(todo["id"].to_pylist()) if failed_status else set()
    return DialoguePlan(todo=todo, retried=retried, lines=lines, planned=chosen.num_rows, prior=prior)


def source_ranks(sources: pa.ChunkedArray) -> pa.Array:
    """Each source's rank in line order: ``file:12`` / ``file#3`` sort by file, then number (not as
    strings); a source without a number sorts before its file's numbered ones."""
    sources = sources.combine_chunks() if isinstance(sources, pa.ChunkedArray) else sources
    parts = pc.extract_regex(sources, r"^(?P<path>.*)[:#](?P<number>[0-9]+)$")
    matched = pc.is_valid(parts)
    path = pc.if_else(matched, pc.struct_field(parts, "path"), sources)
    number = pc.if_else(matched, pc.cast(pc.struct_field(parts, "number"), pa.int64()), -1)
    keys = pa.table({"path": path, "number": number, "source": sources})
    order = pc.sort_indices(keys, sort_keys=[("path", "ascending"), ("number", "ascending"),
                                             ("source", "ascending")]).to_numpy()
    ranks = np.empty(len(order), np.int64)
    ranks[order] = np.arange(len(order), dtype=np.int64)
    return pa.array(ranks)


def _finished(out_dir: str, retry_failed: bool) -> tuple[pa.Array, dict[str, str]]:
    """(ids a run does not redo, {id: its failure status} for ids with only failed records)."""
    existing = read_records(out_dir, ["id", "status"], DIALOGUE_SCHEMA)
    failed = pc.starts_with(existing["status"], "failed:")
    succeeded = pc.unique(existing.filter(pc.invert(failed))["id"])
    failures = existing.filter(pc.and_(failed, pc.invert(pc.is_in(existing["id"], value_set=succeeded))))
    failed_status = dict(zip(failures["id"].to_pylist(), failures["status"].to_pylist()))
    if retry_failed:
        return succeeded, failed_status
    return pc.unique(existing["id"]), failed_status
