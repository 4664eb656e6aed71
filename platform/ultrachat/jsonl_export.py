"""JSON lines beside a compacted record folder: one ``.jsonl`` per data file, written only when new.

Data files are named by what they hold and never change in place (compaction.py), so a data file's
JSONL twin is written once; a re-run writes the twins of new data files and deletes those
whose data file a compaction merged away. HF ``datasets.load_dataset("json", ...)`` and pandas
``read_json(lines=True)`` load the folder as is.
"""

from __future__ import annotations

import json
import logging
import posixpath

import pyarrow.parquet as pq

from ultrachat.compaction import read_manifest
from ultrachat.shards import atomic_output
from ultrachat.storage import filesystem_for

logger = logging.getLogger(__name__)


def export_jsonl(out_dir: str, jsonl_dir: str) -> dict:
    """Mirror ``out_dir``'s committed data files as JSONL in ``jsonl_dir``; returns counts."""
    from pyarrow import fs

    filesystem, root = filesystem_for(out_dir)
    target_fs, target = filesystem_for(jsonl_dir)
    target_fs.create_dir(target, recursive=True)
    wanted = {_twin(f["name"]): f["name"] for f in read_manifest(filesystem, root)["files"]}
    present = {posixpath.basename(i.path) for i in target_fs.get_file_info(fs.FileSelector(target))
               if i.type == fs.FileType.File}
    stale = sorted(n for n in present if n.endswith(".jsonl") and n not in wanted)
    for name in stale:
        target_fs.delete_file(posixpath.join(target, name))
    new = sorted(n for n in wanted if n not in present)
    jobs = [(filesystem, posixpath.join(root, wanted[n]), target_fs, posixpath.join(target, n)) for n in new]
    import ray

    if ray.is_initialized() and jobs:  # the driver does not hold the rows
        task = ray.remote(num_cpus=1, max_retries=2)(write_jsonl)
        ray.get([task.remote(*job) for job in jobs])
    else:
        for job in jobs:
            write_jsonl(*job)
    logger.info("JSONL in %s: %d file(s) written, %d unchanged, %d removed", jsonl_dir, len(new),
                len(wanted) - len(new), len(stale))
    return {"path": jsonl_dir, "written": len(new), "unchanged": len(wanted) - len(new), "removed": len(stale)}


def write_jsonl(filesystem, source: str, target_fs, target: str) -> None:
    """One Parquet file as JSON lines, streamed by row group; visible only once whole."""
    with filesystem.open_input_file(source) as handle, atomic_output(target_fs, target) as out:
        parquet = pq.ParquetFile(handle)
        for group in range(parquet.num_row_groups):
            for row in parquet.read_row_group(group).to_pylist():
                out.write((json.dumps(row, ensure_ascii=False, default=str) + "\n").encode())


def _twin(data_name: str) -> str:
    return data_name[: -len(".parquet")] + ".jsonl"
