"""User-supplied record files (opening lines, entities, C4-style corpora) read as Ray Datasets.

Every input is a JSONL, Parquet or plain-text file, or a folder of them, on a local path or any
pyarrow URI (s3://, gs://). Whole files go to the parse tasks, so every record knows its exact
``file:line`` (JSONL, text) or ``file#row`` (Parquet) source, and a malformed record becomes a
`Malformed` value for the caller to count and report instead of failing the job.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import posixpath
from typing import Any, Callable, Iterator, NamedTuple

from ultrachat.errors import InputError
from ultrachat.hashed_set import HashedSet
from ultrachat.storage import HUB, HUB_HINT, STORE_HINT, filesystem_for, is_uri

# JSON lines may be gzipped, as the C4 release is (c4-train.00000-of-01024.json.gz).
EXTENSIONS = {"jsonl": (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz"), "parquet": (".parquet",),
              "text": (".txt",)}


class Malformed(NamedTuple):
    reason: str


def list_input_files(path: str, fmt: str, key: str, formats: tuple[str, ...] = ("jsonl", "parquet")) -> list[str]:
    """Input files under ``path`` (a file or a folder, searched recursively), sorted; ``key`` names the
    config key in errors. ``fmt`` "auto" takes every extension of ``formats``."""
    from pyarrow import fs

    pattern = None
    if any(c in posixpath.basename(path) for c in "*?["):  # a glob in the file name: list its folder
        path, pattern = posixpath.dirname(path), posixpath.basename(path)
    try:
        filesystem, root = filesystem_for(path)
        info = filesystem.get_file_info(root)
    except Exception as err:  # OSError from pyarrow's stores; the Hub's client raises its own (offline, 401)
        if not is_uri(path):
            raise
        hint = HUB_HINT if path.startswith(HUB) else STORE_HINT
        raise InputError(f"{key}: cannot read {path}: {type(err).__name__}: {err}. {hint}") from None
    if info.type == fs.FileType.NotFound:
        raise InputError(f"{key}: {path} does not exist. Fix: point it to a {' or '.join(formats)} file, or a "
                         f"folder of them")
    if info.type == fs.FileType.File and pattern is None:
        paths = [root]
    elif pattern is not None:
        paths = sorted(i.path for i in filesystem.get_file_info(fs.FileSelector(root))
                       if i.type == fs.FileType.File and fnmatch.fnmatchcase(posixpath.basename(i.path), pattern))
    else:
        # Like pyarrow and HF datasets: names starting with . or _ are bookkeeping (a record folder's
        # _parts and _manifest.json, temp files), at any depth below the folder.
        paths = sorted(i.path for i in filesystem.get_file_info(fs.FileSelector(root, recursive=True))
                       if i.type == fs.FileType.File and not any(
                           part.startswith((".", "_")) for part in posixpath.relpath(i.path, root).split("/")))
    wanted = EXTENSIONS[fmt] if fmt != "auto" else tuple(e for f in formats for e in EXTENSIONS[f])
    chosen = [p for p in paths if p.endswith(wanted)]
    if not chosen:
        where = f"{path} matching {pattern}" if pattern else path
        raise InputError(f"{key}: no {' / '.join(wanted)} files in {where}. Fix: point it to "
                         f"{' or '.join(formats)} records (or set the 'format' key beside it)")
    prefix = path[: path.index("://") + 3] if "://" in path else ""
    return [prefix + p if prefix and "://" not in p else p for p in chosen]



_FETCHED: dict = {}


def keep_rows(batch, column: str, wanted: list):
    """A ``map_batches`` filter: the rows whose ``column`` is in the set (or `HashedSet`) behind
    ``wanted[0]`` (an ObjectRef in a list, so Ray passes the ref, fetched once per worker process, not
    per batch)."""
    import pyarrow as pa
    import ray

    ref = wanted[0]
    if ref.hex() not in _FETCHED:
        _FETCHED.clear()
        _FETCHED[ref.hex()] = ray.get(ref)
    values = _FETCHED[ref.hex()]
    column_values = batch.column(column).to_pylist()
    if isinstance(values, HashedSet):
        return batch.filter(pa.array(values.mask(column_values), pa.bool_()))
    return batch.filter(pa.array([v in values for v in column_values], pa.bool_()))


def iter_file_records(path: str, data: bytes) -> Iterator[tuple[str, Any]]:
    """(source, record) for every record of one file; record is a JSON value, a Parquet row (dict),
    a text line (str) or `Malformed`. Blank lines are skipped."""
    if path.endswith(EXTENSIONS["parquet"]):
        yield from _parquet_records(path, data)
        return
    if path.endswith(".gz"):
        import gzip

        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as err:
            yield f"{path}#file", Malformed(f"unreadable gzip file ({err})")
            return
    is_text = path.endswith(EXTENSIONS["text"])
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        source = f"{path}:{number}"
        if is_text:
            yield source, line.strip()
            continue
        try:
            yield source, json.loads(line)
        except json.JSONDecodeError as err:
            yield source, Malformed(f"malformed JSON ({err.msg} at column {err.colno})")


def _parquet_records(path: str, data: bytes) -> Iterator[tuple[str, Any]]:
    import io

    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as err:  # a corrupt file is one bad input, not a crashed job
        yield f"{path}#file", Malformed(f"unreadable Parquet file ({err})")
        return
    for number, record in enumerate(table.to_pylist()):
        yield f"{path}#{number}", record


def _parse_file(to_row: Callable[[Any, str], dict], file_row: dict) -> Iterator[dict]:
    for source, record in iter_file_records(file_row["path"], file_row["bytes"]):
        yield to_row(record, source)


def read_records(files: list[str], to_row: Callable[[Any, str], dict]):
    """A Ray Dataset with ``to_row(record, source)`` for every record of ``files`` (``to_row`` gets
    `Malformed` records too and must turn them into rows that say so)."""
    import ray

    hub = [f for f in files if f.startswith(HUB)]
    options = {}
    if hub:
        if len(hub) != len(files):
            raise InputError(f"hf:// inputs cannot be mixed with other stores in one job ({hub[0]} and "
                             f"{next(f for f in files if not f.startswith(HUB))}). Fix: copy one side to the other")
        options["filesystem"], _ = filesystem_for(hub[0])
        files = [f[len(HUB):] for f in files]
    return ray.data.read_binary_files(files, include_paths=True, **options).flat_map(
        functools.partial(_parse_file, to_row))
