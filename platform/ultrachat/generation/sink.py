"""Dialogue shards on storage: written atomically under content-derived names, read back for resume.

A shard's name is a hash of the ids it holds, so a retried write (Ray Data retries tasks of a dead
actor) replaces the same file instead of adding a duplicate. Local writes go to a hidden temp file
and are renamed; object stores (s3://, gs://) make a single PUT atomic already. Readers skip hidden
files, so a crash mid-write leaves nothing half-visible.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
from ray.data import Datasink
from ray.data.block import BlockAccessor

from ultrachat.generation.records import DIALOGUE_SCHEMA

logger = logging.getLogger(__name__)


def _filesystem(uri: str):
    from pyarrow import fs

    if "://" in uri:
        return fs.FileSystem.from_uri(uri)
    return fs.LocalFileSystem(), uri


class DialogueSink(Datasink):
    def __init__(self, out_dir: str):
        self.out_dir = out_dir

    def on_write_start(self, schema=None) -> None:
        filesystem, root = _filesystem(self.out_dir)
        filesystem.create_dir(root, recursive=True)

    def write(self, blocks, ctx) -> int:
        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return 0
        table = pa.concat_tables([t.select(DIALOGUE_SCHEMA.names).cast(DIALOGUE_SCHEMA) for t in tables])
        ids = "\n".join(sorted(table.column("id").to_pylist()))
        name = f"part-{hashlib.sha1(ids.encode()).hexdigest()[:20]}.parquet"
        filesystem, root = _filesystem(self.out_dir)
        final = posixpath.join(root, name)
        if "://" in self.out_dir:
            pq.write_table(table, final, filesystem=filesystem)
        else:
            temp = posixpath.join(root, f".{name}.{uuid.uuid4().hex}.tmp")
            pq.write_table(table, temp, filesystem=filesystem)
            filesystem.move(temp, final)
        return table.num_rows


def read_column(out_dir: str, columns: list[str]) -> pa.Table:
    """Only ``columns`` of every finished shard (cheap: Parquet reads just those columns)."""
    import pyarrow.dataset as ds
    from pyarrow import fs

    filesystem, root = _filesystem(out_dir)
    if filesystem.get_file_info(root).type == fs.FileType.NotFound:
        return pa.table({c: pa.array([], DIALOGUE_SCHEMA.field(c).type) for c in columns})
    dataset = ds.dataset(root, format="parquet", filesystem=filesystem, schema=DIALOGUE_SCHEMA,
                         exclude_invalid_files=False)
    return dataset.to_table(columns=columns)
