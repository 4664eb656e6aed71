"""Compaction of per-batch shards into large files with a manifest (compaction.py), its JSONL twins
(jsonl_export.py), and what users load from the result."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import fsspec.implementations.local
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from ultrachat.compaction import FileTargets, compact, compact_in, parts_dir, read_records, record_paths
from ultrachat.generation.records import DIALOGUE_SCHEMA
from ultrachat.jsonl_export import export_jsonl
from ultrachat.shards import write_shard

from dialogue_records import record

TARGETS = FileTargets(rows_per_file=10, mb_per_file=256)


def dialogue(id_: str, status: str = "kept", started_at: float = 0.0) -> dict:
    return record(id_, status, started_at)


def write_parts(out: Path, batches: list[list[dict]]) -> None:
    for rows in batches:
        write_shard(parts_dir(str(out)), pa.Table.from_pylist(rows, schema=DIALOGUE_SCHEMA))


def state(out: Path) -> tuple:
    """What a user sees: the data files, the manifest's files, and every committed record."""
    manifest = json.loads((out / "_manifest.json").read_text())
    rows = read_records(str(out), ["id", "status", "started_at"], DIALOGUE_SCHEMA).to_pylist()
    return (sorted(p.name for p in out.glob("*.parquet")), [f["name"] for f in manifest["files"]],
            sorted((r["id"], r["status"], r["started_at"]) for r in rows), sorted(p.name for p in out.rglob("part-*")))


def sample_output(out: Path) -> None:
    """28 dialogues in batches of 4, a failure retried by a later success, one failed twice."""
    rows = [dialogue(f"d{i:02d}", started_at=float(i)) for i in range(25)]
    write_parts(out, [rows[i:i + 4] for i in range(0, 25, 4)])
    write_parts(out, [[dialogue("d30", "failed:api_error", 1.0), dialogue("d31", "failed:api_error", 1.0),
                       dialogue("d32")]])
    write_parts(out, [[dialogue("d30", "kept", 2.0), dialogue("d31", "failed:timeout", 2.0)]])


def test_parts_become_few_large_files_with_one_record_per_id(tmp_path):
    out = tmp_path / "dialogues"
    sample_output(out)
    counts = compact(str(out), DIALOGUE_SCHEMA, TARGETS)
    files, listed, rows, parts = state(out)
    assert counts["replaced_records"] == 2 and counts["rows"] == 28 and len(files) == 3 == len(listed)
    assert parts == [] and files == sorted(listed)
    assert sorted(pq.read_metadata(out / f).num_rows for f in listed) == [8, 10, 10]
    by_id = {i: (s, t) for i, s, t in rows}
    assert len(rows) == 28 and by_id["d30"] == ("kept", 2.0) and by_id["d31"] == ("failed:timeout", 2.0)
    assert compact(str(out), DIALOGUE_SCHEMA, TARGETS)["written"] == 0  # idempotent
    assert state(out) == (files, listed, rows, parts)


def test_a_rerun_merges_new_parts_and_replaces_records_in_committed_files(tmp_path):
    out = tmp_path / "dialogues"
    sample_output(out)
    compact(str(out), DIALOGUE_SCHEMA, TARGETS)
    before = state(out)
    write_parts(out, [[dialogue("d31", "kept", 3.0), dialogue("d40")]])  # the retry succeeded; one new
    counts = compact(str(out), DIALOGUE_SCHEMA, TARGETS)
    files, listed, rows, parts = state(out)
    assert counts["replaced_records"] == 1 and counts["rows"] == 29 and parts == []
    assert ("d31", "kept", 3.0) in rows and ("d31", "failed:timeout", 2.0) not in rows
    assert len(set(before[1]) & set(listed)) == 2  # untouched files stay as they are


def test_a_new_part_named_like_a_consumed_one_is_kept(tmp_path):
    # A batch of the same ids (a retried batch) gets the same part name as one compacted before.
    out = tmp_path / "dialogues"
    write_parts(out, [[dialogue("a", "failed:api_error", 1.0), dialogue("b", "failed:api_error", 1.0)]])
    compact(str(out), DIALOGUE_SCHEMA, TARGETS)
    assert json.loads((out / "_manifest.json").read_text())["consumed"] == []
    write_parts(out, [[dialogue("a", "kept", 2.0), dialogue("b", "kept", 2.0)]])
    compact(str(out), DIALOGUE_SCHEMA, TARGETS)
    assert state(out)[2] == [("a", "kept", 2.0), ("b", "kept", 2.0)]


class KilledAt(Exception):
    pass


class DyingFileSystem(fsspec.implementations.local.LocalFileSystem):
    """A local disk with object-store semantics (a write appears whole at close, or not at all) that
    is 'killed' at its n-th change (a write, move or delete), so a test can stop compaction anywhere."""

    def __init__(self, die_at: int):
        super().__init__()
        self.die_at, self.changes = die_at, 0

    def _change(self):
        self.changes += 1
        if self.changes == self.die_at:
            raise KilledAt(self.changes)

    def open(self, path, mode="rb", **kwargs):
        if "w" in mode:
            self._change()
        return super().open(path, mode, **kwargs)

    def mv(self, *args, **kwargs):
        self._change()
        return super().mv(*args, **kwargs)

    def rm(self, *args, **kwargs):
        self._change()
        return super().rm(*args, **kwargs)


def test_a_kill_at_any_step_of_compaction_and_a_rerun_give_the_same_files_and_ids(tmp_path):
    pristine = tmp_path / "pristine"
    sample_output(pristine)
    reference = tmp_path / "reference"
    shutil.copytree(pristine, reference)
    compact(str(reference), DIALOGUE_SCHEMA, TARGETS)
    expected = state(reference)
    killed = 0
    for die_at in range(1, 100):
        out = tmp_path / f"killed{die_at}"
        shutil.copytree(pristine, out)
        dying = DyingFileSystem(die_at)
        try:
            compact_in(pafs.PyFileSystem(pafs.FSSpecHandler(dying)), str(out), DIALOGUE_SCHEMA, TARGETS)
        except KilledAt:
            killed += 1
            assert not list(out.glob(".*.tmp"))
            compact(str(out), DIALOGUE_SCHEMA, TARGETS)  # the re-run
            assert state(out) == expected, f"killed at change {die_at}"
            continue
        assert state(out) == expected
        break
    assert killed >= 5, "compaction made fewer changes than it should (3 files, manifest, 9 deletions)"


def test_jsonl_twins_are_written_once_and_follow_the_data_files(tmp_path):
    out, jsonl = tmp_path / "dialogues", tmp_path / "dialogues_jsonl"
    sample_output(out)
    compact(str(out), DIALOGUE_SCHEMA, TARGETS)
    assert export_jsonl(str(out), str(jsonl))["written"] == 3
    assert export_jsonl(str(out), str(jsonl)) == {"path": str(jsonl), "written": 0, "unchanged": 3, "removed": 0}
    lines = [json.loads(line) for f in sorted(jsonl.glob("*.jsonl")) for line in f.read_text().splitlines()]
    assert sorted(r["id"] for r in lines) == sorted(i for i, _, _ in state(out)[2])
    write_parts(out, [[dialogue("d31", "kept", 3.0)]])  # replaces a record inside one data file
    compact(str(out), DIALOGUE_SCHEMA, TARGETS)
    counts = export_jsonl(str(out), str(jsonl))
    # The file holding d31 (and the undersized last one) are merged with the part; the others stay.
    assert counts["written"] == counts["removed"] >= 1 and counts["unchanged"] == 3 - counts["written"] >= 1
    lines = [json.loads(line) for f in sorted(jsonl.glob("*.jsonl")) for line in f.read_text().splitlines()]
    assert [r["status"] for r in lines if r["id"] == "d31"] == ["kept"] and len(lines) == 28
    assert sorted(p.stem for p in jsonl.glob("*.jsonl")) == sorted(Path(f).stem for f in state(out)[1])


def test_readers_see_committed_records_only(tmp_path):
    out = tmp_path / "dialogues"
    sample_output(out)
    assert len(record_paths(str(out))) == 9  # before compaction: the parts
    compact(str(out), DIALOGUE_SCHEMA, TARGETS)
    (out / "data-0000orphan.parquet").write_bytes((out / state(out)[1][0]).read_bytes())  # never committed
    assert len(record_paths(str(out))) == 3
    from ultrachat.inputs import list_input_files

    assert [Path(p).name for p in list_input_files(str(out.parent), "auto", "input.path")] == state(out)[0]


def test_the_output_loads_with_the_ultrachat_200k_columns(tmp_path):
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "dialogues"
    sample_output(out)
    compact(str(out), DIALOGUE_SCHEMA, TARGETS)
    loaded = datasets.load_dataset("parquet", data_files=str(out / "*.parquet"), split="train",
                                   cache_dir=str(tmp_path / "hf"))
    assert {"prompt", "prompt_id", "messages"} <= set(loaded.column_names) and loaded.num_rows == 28
    row = loaded.sort("prompt_id")[0]
    assert row["prompt"] == "opening d00" and row["messages"][0] == {"role": "user", "content": "opening d00"}


def test_shards_of_the_layout_before_compaction_are_resumed_and_compacted(tmp_path):
    # Top-level part-*.parquet without the prompt columns: what outputs written before #21 hold.
    out = tmp_path / "dialogues"
    old = pa.Table.from_pylist([record("old1", "kept"), record("old2", "failed:api_error")], schema=DIALOGUE_SCHEMA)
    write_shard(str(out), old.drop_columns(["prompt", "prompt_id"]))
    write_parts(out, [[dialogue("old2", "kept", 5.0), dialogue("new")]])
    assert sorted(Path(p).name for p in record_paths(str(out)))[-1].startswith("part-")
    compact(str(out), DIALOGUE_SCHEMA, TARGETS)
    files, _, rows, parts = state(out)
    assert parts == [] and rows == [("new", "kept", 0.0), ("old1", "kept", 0.0), ("old2", "kept", 5.0)]
    table = pq.read_table(out / files[0])
    assert table.schema.names == DIALOGUE_SCHEMA.names
    assert dict(zip(table["id"].to_pylist(), table["prompt"].to_pylist()))["old1"] is None


def test_a_large_file_is_written_in_row_groups(tmp_path):
    out = tmp_path / "dialogues"
    write_parts(out, [[dialogue(f"r{i:05d}") for i in range(start, start + 2500)] for start in range(0, 25000, 2500)])
    compact(str(out), DIALOGUE_SCHEMA, FileTargets(rows_per_file=100_000, mb_per_file=256))
    (name,) = state(out)[0]
    metadata = pq.read_metadata(out / name)
    assert metadata.num_rows == 25000 and metadata.num_row_groups == 3
