"""A record folder's small per-batch shards merged into a few large files, with a manifest.

Layout (the dialogues folder; local or any pyarrow URI)::

    _parts/part-<hash>.parquet   one per finished batch (the actors' sink): a kill loses at most the
                                 batches in flight
    data-<hash>.parquet          large files named by what they hold: what users load
    _manifest.json               the data files (name, rows, bytes); between a compaction's commit and
                                 its deletions, also what it consumed

Commit protocol, atomic and idempotent on object stores too (they have no rename):

1. tidy: delete the inputs the manifest says were consumed, and data files it does not list (written
   by a compaction killed before its commit);
2. plan from the key/status/started_at columns only: every part, plus the data files that hold a key a
   part holds too (a retry replaces their record) or are undersized; keep one record per key (the
   newest success, else the newest failure); cut groups of ``rows_per_file`` / ``mb_per_file`` in
   input order (inputs sorted by name);
3. write each group as ``data-<hash of its records' keys, statuses, start times>.parquet`` (a Ray
   task per file when Ray is up);
4. write the manifest: the commit point (one PUT, or a rename on a local disk);
5. delete the consumed inputs, then write the manifest again without them.

Killed before 4, the old manifest and every input are still there, so the re-run plans the same groups
and writes the same files; killed after 4, step 1 of the re-run finishes the deletions (the stage
calls ``tidy`` before it writes new parts, whose names may repeat a consumed one's). Readers go
through ``record_paths`` (the manifest's files plus the parts it did not consume), never a glob.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ultrachat.shards import atomic_output, read_paths
from ultrachat.storage import filesystem_for, join

logger = logging.getLogger(__name__)

PARTS_DIR = "_parts"
MANIFEST = "_manifest.json"
_MB = 1 << 20
_ROWS_PER_ROW_GROUP = 10_000  # records per written row group (and per flush)


def parts_dir(out_dir: str) -> str:
    """Where the per-batch shards of ``out_dir`` go."""
    return join(out_dir, PARTS_DIR)


@dataclass(frozen=True)
class FileTargets:
    rows_per_file: int
    mb_per_file: float

    def undersized(self, rows: int, size: int) -> bool:
        return rows < self.rows_per_file / 2 and size < self.mb_per_file * _MB / 2


def record_paths(out_dir: str) -> list[str]:
    """Paths (inside ``filesystem_for(out_dir)``) of every committed record file: no duplicates, no
    half-written or consumed file."""
    filesystem, root = filesystem_for(out_dir)
    return [posixpath.join(root, name) for name in _live_names(filesystem, root)]


def read_records(out_dir: str, columns: list[str], schema: pa.Schema) -> pa.Table:
    """``columns`` of every committed record of ``out_dir`` (Parquet reads just those columns)."""
    filesystem, _ = filesystem_for(out_dir)
    return read_paths(filesystem, record_paths(out_dir), columns, schema)


def compact(out_dir: str, schema: pa.Schema, targets: FileTargets, key: str = "id") -> dict:
    """Merge ``out_dir``'s parts into large data files (see the module doc); returns counts."""
    filesystem, root = filesystem_for(out_dir)
    return compact_in(filesystem, root, schema, targets, key)


def compact_in(filesystem, root: str, schema: pa.Schema, targets: FileTargets, key: str = "id") -> dict:
    manifest = _tidy(filesystem, root)
    files = {f["name"]: f for f in manifest["files"]}
    parts = _part_names(filesystem, root, set(manifest["consumed"]))
    inputs = _inputs(filesystem, root, parts, files, targets, key)
    counts = {"parts": len(parts), "merged_files": len(inputs) - len(parts), "replaced_records": 0}
    if not inputs:
        counts.update(files=len(files), rows=sum(f["rows"] for f in files.values()), written=0)
        return counts
    groups, dropped = _plan(filesystem, root, inputs, targets, key)
    written = _write_groups(filesystem, root, groups, schema, key)
    kept = {name: f for name, f in files.items() if name not in inputs}
    kept.update({w["name"]: w for w in written})
    committed = {"key": key, "rows": sum(f["rows"] for f in kept.values()),
                 "files": sorted(kept.values(), key=lambda f: f["name"]),
                 "consumed": sorted(n for n in inputs if n not in kept)}
    _write_manifest(filesystem, root, committed)
    _finish(filesystem, root, committed)
    counts.update(files=len(kept), rows=sum(f["rows"] for f in kept.values()), written=len(written),
                  replaced_records=dropped)
    logger.info("compacted %d part(s) and %d file(s) into %d new file(s); %d file(s), %d records in all",
                counts["parts"], counts["merged_files"], len(written), len(kept), counts["rows"])
    return counts


def read_manifest(filesystem, root: str) -> dict:
    path = posixpath.join(root, MANIFEST)
    try:
        with filesystem.open_input_stream(path) as stream:
            return json.loads(stream.read().decode())
    except FileNotFoundError:
        return {"files": [], "consumed": []}


# ------------------------------------------------------------------------------------ the steps


def tidy(out_dir: str) -> None:
    """Finish what a killed compaction left. Call before new parts are written: a new batch can reuse
    a consumed part's name (same ids), and must not be deleted as consumed."""
    filesystem, root = filesystem_for(out_dir)
    _tidy(filesystem, root)


def _tidy(filesystem, root: str) -> dict:
    """Step 1; returns the manifest, with nothing left consumed."""
    manifest = read_manifest(filesystem, root)
    listed = {f["name"] for f in manifest["files"]}
    stale = [n for n in _data_names(filesystem, root) if n not in listed]
    if stale:
        logger.info("removing %d data file(s) an interrupted compaction wrote but never committed", len(stale))
    _delete(filesystem, root, stale)
    return _finish(filesystem, root, manifest)


def _finish(filesystem, root: str, manifest: dict) -> dict:
    """Step 5: delete what the committed manifest consumed, then forget it."""
    if not manifest["consumed"]:
        return manifest
    _delete(filesystem, root, manifest["consumed"])
    _remove_empty_parts_dir(filesystem, root)
    manifest = {**manifest, "consumed": []}
    _write_manifest(filesystem, root, manifest)
    return manifest


def _inputs(filesystem, root, parts: list[str], files: dict, targets: FileTargets, key: str) -> list[str]:
    """Names (relative to root) of the files this compaction merges, sorted (the plan's order)."""
    small = sorted(n for n, f in files.items() if targets.undersized(f["rows"], f["bytes"]))
    if not parts:
        return small if len(small) > 1 else []
    part_keys = _column(filesystem, root, parts, key)
    shared = []
    for name in sorted(set(files) - set(small)):
        if pc.any(pc.is_in(_column(filesystem, root, [name], key), value_set=part_keys)).as_py():
            shared.append(name)
    return sorted(parts + small + shared)


def _plan(filesystem, root, inputs: list[str], targets: FileTargets, key: str) -> tuple[list[dict], int]:
    """(file name, {input name: keys}) per output file, and how many records the merge drops."""
    rows = _scan(filesystem, root, inputs, [key, "status", "started_at"])
    rows = rows.append_column("_ok", pc.invert(pc.starts_with(rows["status"], "failed")))
    # One record per key: its newest success, else its newest failure (ties: the later input).
    order = rows.sort_by([(key, "ascending"), ("_ok", "descending"), ("started_at", "descending"),
                          ("_input", "descending")])
    keys = order[key].to_numpy(zero_copy_only=False)
    first = np.ones(len(keys), bool)
    first[1:] = keys[1:] != keys[:-1]
    chosen = order.filter(pa.array(first)).sort_by([("_input", "ascending"), (key, "ascending")])
    sizes = _sizes(filesystem, root)  # two listings, not a request per input
    bytes_per_row = sum(sizes[n] for n in inputs) / max(rows.num_rows, 1)
    per_file = max(1, min(targets.rows_per_file, int(targets.mb_per_file * _MB / max(bytes_per_row, 1))))
    names, chosen_keys = chosen["_input"].to_numpy(), chosen[key].to_pylist()
    # A file's name hashes what it holds (each key's status and start time too): a file that takes a
    # retried record gets a new name, so its JSONL twin and any copy of the old one are told apart.
    versions = [f"{k}\x00{s}\x00{t!r}" for k, s, t in zip(chosen_keys, chosen["status"].to_pylist(),
                                                          chosen["started_at"].to_pylist())]
    groups = []
    for start in range(0, len(chosen_keys), per_file):
        group: dict[str, list[str]] = {}
        for index, key_value in zip(names[start:start + per_file], chosen_keys[start:start + per_file]):
            group.setdefault(inputs[index], []).append(key_value)
        digest = hashlib.sha1("\n".join(sorted(versions[start:start + per_file])).encode()).hexdigest()[:20]
        groups.append((f"data-{digest}.parquet", group))
    return groups, rows.num_rows - chosen.num_rows


def _scan(filesystem, root, names: list[str], columns: list[str]) -> pa.Table:
    """``columns`` of the files ``names`` (read in parallel), plus ``_input``: the index in ``names``."""
    import pyarrow.dataset as ds

    paths = [posixpath.join(root, n) for n in names]
    table = ds.dataset(paths, format="parquet", filesystem=filesystem).to_table(
        columns=columns + ["__filename"])
    index = {path: i for i, path in enumerate(paths)}
    inputs = pa.array([index[f] for f in table["__filename"].to_pylist()], pa.int64())
    return table.drop_columns(["__filename"]).append_column("_input", inputs)


def _write_groups(filesystem, root, groups: list[tuple[str, dict]], schema: pa.Schema, key: str) -> list[dict]:
    import ray

    if ray.is_initialized():  # even one file: the driver does not hold its rows
        task = ray.remote(num_cpus=1, max_retries=2)(write_group)
        return ray.get([task.remote(filesystem, root, name, group, schema, key) for name, group in groups])
    return [write_group(filesystem, root, name, group, schema, key) for name, group in groups]


def write_group(filesystem, root: str, name: str, group: dict[str, list[str]], schema: pa.Schema, key: str) -> dict:
    """Write the records ``group`` picks ({input name: keys}) as ``root/name``; returns its manifest entry.

    Streams: one input row group at a time, a row group out per ~10k records, so a task's memory stays
    bounded whatever the file's size. Visible only whole (`atomic_output`)."""
    path = posixpath.join(root, name)
    rows, pending = 0, []
    with atomic_output(filesystem, path) as stream, pq.ParquetWriter(stream, schema) as writer:
        for source in sorted(group):
            wanted = pa.array(group[source], pa.string())
            with filesystem.open_input_file(posixpath.join(root, source)) as handle:
                parquet = pq.ParquetFile(handle)
                for index in range(parquet.num_row_groups):
                    piece = parquet.read_row_group(index)
                    pending.append(_conform(piece.filter(pc.is_in(piece[key], value_set=wanted)), schema))
                    if sum(t.num_rows for t in pending) >= _ROWS_PER_ROW_GROUP:
                        rows += _flush(writer, pending)
        rows += _flush(writer, pending)
    assert rows == sum(len(keys) for keys in group.values()), (name, rows)
    return {"name": name, "rows": rows, "bytes": filesystem.get_file_info(path).size}


def _flush(writer, pending: list[pa.Table]) -> int:
    if not pending:
        return 0
    table = pa.concat_tables(pending)
    pending.clear()
    writer.write_table(table)
    return table.num_rows


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` in ``schema``'s columns and types; a column an older layout lacks is null."""
    columns = [table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema) if table.num_rows else schema.empty_table()


def _write_manifest(filesystem, root: str, manifest: dict) -> None:
    with atomic_output(filesystem, posixpath.join(root, MANIFEST)) as stream:
        stream.write(json.dumps(manifest, indent=1).encode())


# ------------------------------------------------------------------------------------ listings


def _live_names(filesystem, root: str) -> list[str]:
    manifest = read_manifest(filesystem, root)
    consumed = set(manifest["consumed"])
    return [f["name"] for f in manifest["files"]] + _part_names(filesystem, root, consumed)


def _part_names(filesystem, root: str, consumed: set[str]) -> list[str]:
    # Top-level part-* files are the layout before compaction existed: resumed and compacted like parts.
    names = [posixpath.join(PARTS_DIR, n) for n in _names(filesystem, posixpath.join(root, PARTS_DIR), "part-")]
    names += _names(filesystem, root, "part-")
    return sorted(n for n in names if n not in consumed)


def _data_names(filesystem, root: str) -> list[str]:
    return _names(filesystem, root, "data-")


def _names(filesystem, directory: str, prefix: str) -> list[str]:
    return sorted(_listing(filesystem, directory, prefix))


def _sizes(filesystem, root: str) -> dict[str, int]:
    """Bytes of every part and data file, by name relative to ``root``."""
    sizes = {posixpath.join(PARTS_DIR, n): size
             for n, size in _listing(filesystem, posixpath.join(root, PARTS_DIR), "part-").items()}
    return {**sizes, **_listing(filesystem, root, "")}


def _listing(filesystem, directory: str, prefix: str) -> dict[str, int]:
    """{file name: bytes} of the ``prefix*.parquet`` files directly in ``directory``."""
    from pyarrow import fs

    if filesystem.get_file_info(directory).type != fs.FileType.Directory:
        return {}
    infos = filesystem.get_file_info(fs.FileSelector(directory))
    return {posixpath.basename(i.path): i.size for i in infos if i.type == fs.FileType.File
            and posixpath.basename(i.path).startswith(prefix) and i.path.endswith(".parquet")}


def _column(filesystem, root: str, names: list[str], column: str) -> pa.Array:
    tables = [pq.read_table(posixpath.join(root, n), columns=[column], filesystem=filesystem) for n in names]
    return pa.concat_tables(tables)[column].combine_chunks() if tables else pa.array([], pa.string())


def _remove_empty_parts_dir(filesystem, root: str) -> None:
    from pyarrow import fs

    # Object stores have no folders to remove; a local one goes only when nothing at all is in it.
    directory = posixpath.join(root, PARTS_DIR)
    if not isinstance(filesystem, fs.LocalFileSystem):
        return
    try:
        if not filesystem.get_file_info(fs.FileSelector(directory)):
            filesystem.delete_dir(directory)
    except OSError:  # it never existed
        pass


def _delete(filesystem, root: str, names: list[str]) -> None:
    for name in names:
        try:
            filesystem.delete_file(posixpath.join(root, name))
        except FileNotFoundError:
            pass
