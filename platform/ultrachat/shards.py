"""Record shards on storage (dialogues, construction calls): written atomically under content-derived
names, read back for resume.

A shard's name is a hash of the keys it holds, so a retried write (Ray Data retries tasks of a dead
actor) replaces the same file instead of adding a duplicate. Local writes (paths and file:// URIs)
go to a hidden temp file and are renamed; object stores (s3://, gs://) make a single PUT atomic
already. Readers skip hidden files, so a crash mid-write leaves nothing half-visible.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import posixpath
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
from ray.data import Datasink
from ray.data.block import BlockAccessor

from ultrachat.storage import filesystem_for, join

logger = logging.getLogger(__name__)


class ShardSink(Datasink):
    """Writes each block as ``part-<hash of its keys>.parquet``; with ``partition_by``, rows go to
    ``out_dir/<value of that column>/`` (one Ray Data write for several record kinds)."""

    def __init__(self, out_dir: str, schema: pa.Schema, key: str = "id", partition_by: str | None = None):
        self.out_dir, self.schema, self.key, self.partition_by = out_dir, schema, key, partition_by

    def on_write_start(self, schema=None) -> None:
        filesystem, root = filesystem_for(self.out_dir)
        filesystem.create_dir(root, recursive=True)

    def write(self, blocks, ctx) -> int:
        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        tables = [t.select(self.schema.names).cast(self.schema) for t in tables if t.num_rows]
        if not tables:
            return 0
        table = pa.concat_tables(tables)
        if self.partition_by is None:
            self._write(self.out_dir, table)
            return table.num_rows
        import pyarrow.compute as pc

        for value in sorted(set(table.column(self.partition_by).to_pylist())):
            part = table.filter(pc.equal(table.column(self.partition_by), value))
            self._write(join(self.out_dir, value), part)
        return table.num_rows

    def _write(self, out_dir: str, table: pa.Table) -> None:
        write_shard(out_dir, table, self.key)


def write_shard(out_dir: str, table: pa.Table, key: str = "id") -> str:
    """Write ``table`` atomically as ``out_dir/part-<hash of its keys>.parquet``; returns the path."""
    keys = "\n".join(sorted(str(k) for k in table.column(key).to_pylist()))
    name = f"part-{hashlib.sha1(keys.encode()).hexdigest()[:20]}.parquet"
    filesystem, root = filesystem_for(out_dir)
    filesystem.create_dir(root, recursive=True)
    write_atomic(filesystem, posixpath.join(root, name), table)
    return join(out_dir, name)


def read_column(out_dir: str, columns: list[str], schema: pa.Schema) -> pa.Table:
    """Only ``columns`` of every finished shard (cheap: Parquet reads just those columns)."""
    filesystem, _ = filesystem_for(out_dir)
    return read_paths(filesystem, shard_paths(out_dir), columns, schema)


def read_paths(filesystem, paths: list[str], columns: list[str], schema: pa.Schema) -> pa.Table:
    """``columns`` of the Parquet files ``paths`` (an empty table of those columns when there are none)."""
    import pyarrow.dataset as ds

    if not paths:
        return pa.table({c: pa.array([], schema.field(c).type) for c in columns})
    return ds.dataset(paths, format="parquet", filesystem=filesystem, schema=schema).to_table(columns=columns)


def drop_superseded_failures(out_dir: str, retried: set[str], schema: pa.Schema, key: str = "id") -> int:
    """Keep one record per retried key: its newest success, else its newest failure; drop the other
    ``failed:*`` rows.

    Keeps "one record per input" after a re-run retries failures (whether the retry worked or failed
    again). Each touched shard is rewritten atomically under its own name; reads only the
    key/status/started_at columns to decide.
    """
    import pyarrow.compute as pc

    if not retried:
        return 0
    filesystem, _ = filesystem_for(out_dir)
    columns = [key, "status", "started_at"]
    best: dict[str, tuple[bool, float]] = {}  # key -> (succeeded, started_at) of the record to keep
    per_file = {}
    for path in shard_paths(out_dir):
        table = pq.read_table(path, columns=columns, filesystem=filesystem)
        per_file[path] = table
        for id_, status, started in zip(*(table.column(c).to_pylist() for c in columns)):
            if id_ in retried:
                best[id_] = max(best.get(id_, (False, float("-inf"))), (not status.startswith("failed"), started))
    removed = 0
    for path, table in per_file.items():
        rows = zip(*(table.column(c).to_pylist() for c in columns))
        stale = [i in best and st.startswith("failed") and best[i] != (False, t) for i, st, t in rows]
        if not any(stale):
            continue
        full = pq.read_table(path, filesystem=filesystem, schema=schema)
        kept = full.filter(pc.invert(pa.array(stale)))
        removed += full.num_rows - kept.num_rows
        if kept.num_rows:
            write_atomic(filesystem, path, kept)
        else:
            filesystem.delete_file(path)
    return removed


def shard_paths(out_dir: str) -> list[str]:
    from pyarrow import fs

    filesystem, root = filesystem_for(out_dir)
    if filesystem.get_file_info(root).type == fs.FileType.NotFound:
        return []
    infos = filesystem.get_file_info(fs.FileSelector(root))
    return sorted(i.path for i in infos if posixpath.basename(i.path).startswith("part-")
                  and i.path.endswith(".parquet"))


def write_atomic(filesystem, path: str, table: pa.Table, **options) -> None:
    """``table`` as Parquet at ``path``, never seen half-written (see `atomic_output`). ``options``:
    ``pq.write_table``'s."""
    with atomic_output(filesystem, path) as stream:
        pq.write_table(table, stream, **options)


@contextlib.contextmanager
def atomic_output(filesystem, path: str):
    """An output stream whose file readers see whole or not at all: object stores make one upload
    atomic (it completes when the stream closes); on a local disk (a path or a file:// URI), a hidden
    temp file is renamed into place."""
    from pyarrow import fs

    if not isinstance(filesystem, fs.LocalFileSystem):
        with filesystem.open_output_stream(path) as stream:
            yield stream
        return
    directory, name = posixpath.split(path)
    temp = posixpath.join(directory, f".{name}.{uuid.uuid4().hex}.tmp")
    with filesystem.open_output_stream(temp) as stream:
        yield stream
    filesystem.move(temp, path)
