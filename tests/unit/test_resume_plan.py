"""The columnar resume plan (generation/resume.py) against the plan it replaced, on random inputs with
duplicates, invalid lines and earlier output (successes, failures, both)."""

from __future__ import annotations

import random
from collections import Counter

import pyarrow as pa
import pytest

from ultrachat.generation.records import DIALOGUE_SCHEMA
from ultrachat.generation.resume import plan_from_table, source_ranks
from ultrachat.hashed_set import HashedSet
from ultrachat.ids import source_order
from ultrachat.shards import write_shard

from dialogue_records import record


def reference_plan(rows: list[dict], existing: list[tuple[str, str]], limit, retry_failed):
    """The dict-based plan this module replaced (generation/run.py before #21), kept as the oracle;
    one fix: an id with a success and an older failure counts as done, not failed."""
    first, lines = {}, Counter()
    for row in rows:
        lines["invalid_lines" if row["invalid"] else "valid_lines"] += 1
        key = source_order(row["source"])
        if row["id"] in first:
            lines["duplicate_lines"] += 1
            if key >= first[row["id"]]:
                continue
        first[row["id"]] = key
    chosen = sorted(first.items(), key=lambda item: item[1])
    if limit is not None:
        chosen = chosen[:limit]
    done, failed, kept_failures = set(), set(), {}
    succeeded = {i for i, s in existing if not s.startswith("failed:")}
    for id_, status in existing:
        (failed if retry_failed and status.startswith("failed:") else done).add(id_)
        if status.startswith("failed:") and id_ not in succeeded:
            kept_failures[id_] = status
    failed -= done
    todo = {id_: key[2] for id_, key in chosen if id_ not in done}
    prior = Counter(kept_failures.get(id_, "done") for id_, _ in chosen if id_ in done)
    return todo, failed & set(todo), lines, len(chosen), prior


def random_case(rng: random.Random, n: int):
    files = [f"/data/part{f}.jsonl" for f in range(3)] + ["s3://bucket/x/openings.parquet"]
    rows, ids = [], [f"id{i}" for i in range(max(1, n // 2))]
    for line in range(n):
        path = rng.choice(files)
        sep = "#" if path.endswith(".parquet") else ":"
        source = f"{path}{sep}{rng.randint(1, 5 * n)}" if rng.random() > 0.05 else f"{path}{sep}file"
        invalid = "malformed JSON" if rng.random() < 0.1 else ""
        rows.append({"id": rng.choice(ids) if not invalid else f"bad-{source}", "source": source,
                     "invalid": invalid, "sector": rng.choice(["I", "II", "III"]) if not invalid else ""})
    unique = {}
    for row in rows:  # a source is one line: unique
        unique.setdefault(row["source"], row)
    rows = list(unique.values())
    rng.shuffle(rows)
    existing = [(rng.choice(ids), rng.choice(["kept", "filtered:x", "failed:api_error", "failed:timeout"]))
                for _ in range(rng.randint(0, n // 2))]
    return rows, existing


@pytest.mark.parametrize("seed", range(12))
def test_the_plan_matches_the_dict_plan_on_random_inputs(tmp_path, seed):
    rng = random.Random(seed)
    rows, existing = random_case(rng, rng.randint(1, 300))
    out = str(tmp_path / "dialogues")
    for start in range(0, len(existing), 7):  # earlier output in several shards, with repeats
        write_shard(out, pa.Table.from_pylist([record(i, s, float(k)) for k, (i, s) in
                                               enumerate(existing[start:start + 7], start)], schema=DIALOGUE_SCHEMA))
    limit = rng.choice([None, None, 1, rng.randint(1, 200)])
    retry = rng.random() < 0.7
    plan = plan_from_table(pa.Table.from_pylist(rows), out, limit, retry)
    todo, retried, lines, planned, prior = reference_plan(rows, existing, limit, retry)
    assert dict(zip(plan.todo["id"].to_pylist(), plan.todo["source"].to_pylist())) == todo
    assert plan.todo["id"].to_pylist() == list(todo)  # source order, as the old plan's
    assert plan.retried == retried
    assert {k: plan.lines[k] for k in lines} == dict(lines)
    assert plan.planned == planned and plan.prior == prior
    wanted = plan.wanted_sources()
    assert list(wanted.mask([r["source"] for r in rows])) == [r["source"] in set(todo.values()) for r in rows]


def test_sources_rank_by_file_then_line_number_not_as_strings():
    sources = ["a.jsonl:10", "a.jsonl:9", "b.jsonl:1", "a.jsonl:x", "s3://b/p.parquet#2", "s3://b/p.parquet#11"]
    ranks = source_ranks(pa.chunked_array([sources])).to_pylist()
    assert [s for _, s in sorted(zip(ranks, sources))] == sorted(sources, key=source_order)


def test_hashed_set_membership_is_exact_on_many_values():
    values = [f"/openings/file{i % 97}.jsonl:{i}" for i in range(20000)]
    wanted = HashedSet(values[::3])
    assert len(wanted) == len(values[::3]) and wanted.nbytes == 16 * len(wanted)
    assert list(wanted.mask(values)) == [i % 3 == 0 for i in range(len(values))]
    assert list(HashedSet([]).mask(["x"])) == [False]
