"""Read opening lines (JSONL or Parquet, a file or a folder, local or any pyarrow URI) as a Ray Dataset.

A JSONL record needs ``text`` (or ``messages``, whose first user turn is used); ``id`` and ``sector``
(I, II, III) are optional and every other field is kept as provenance. A malformed line does not stop
the job: it becomes a row with ``invalid`` set, naming its file and line, and ends as an
``invalid:<reason>`` record in the output so every line has exactly one recorded status.
"""

from __future__ import annotations

import json
import logging
import posixpath
from typing import Any, Iterator

from ultrachat.config.generation import SECTORS, OpeningsInput
from ultrachat.generation.records import OPENING_SCHEMA, stable_id
from ultrachat.storage import filesystem_for

logger = logging.getLogger(__name__)

_JSONL = (".jsonl", ".json", ".ndjson")
_PARQUET = (".parquet",)
_SECTOR_ALIASES = {"1": "I", "2": "II", "3": "III"}


def list_input_files(config: OpeningsInput) -> tuple[list[str], list[str]]:
    """(jsonl files, parquet files) under ``config.path``; a clear error if there are none."""
    from pyarrow import fs

    filesystem, root = filesystem_for(config.path)
    info = filesystem.get_file_info(root)
    if info.type == fs.FileType.NotFound:
        raise ValueError(f"openings.path: {config.path} does not exist. Fix: point it to a JSONL or "
                         f"Parquet file, or a folder of them")
    if info.type == fs.FileType.File:
        paths = [root]
    else:
        paths = sorted(i.path for i in filesystem.get_file_info(fs.FileSelector(root, recursive=True))
                       if i.type == fs.FileType.File and not posixpath.basename(i.path).startswith((".", "_")))
    prefix = config.path[: config.path.index("://") + 3] if "://" in config.path else ""
    wanted = {"jsonl": _JSONL, "parquet": _PARQUET}.get(config.format, _JSONL + _PARQUET)
    chosen = [p for p in paths if p.endswith(wanted)]
    if not chosen:
        raise ValueError(f"openings.path: no {' / '.join(wanted)} files in {config.path}. Fix: point it to "
                         f"JSONL or Parquet opening lines (or set openings.format)")
    uris = [prefix + p if prefix and "://" not in p else p for p in chosen]
    return [u for u in uris if u.endswith(_JSONL)], [u for u in uris if u.endswith(_PARQUET)]


def normalize(record: Any, source: str) -> dict:
    """One input record -> an opening row (OPENING_SCHEMA); never raises."""
    if not isinstance(record, dict):
        return _invalid(source, f"expected a JSON object, got {type(record).__name__}")
    text = record.get("text")
    if text is None and isinstance(record.get("messages"), list):
        text = next((m.get("content") for m in record["messages"]
                     if isinstance(m, dict) and m.get("role") == "user"), None)
    if not isinstance(text, str) or not text.strip():
        return _invalid(source, "no non-empty 'text' (or user turn in 'messages')")
    sector = str(record.get("sector", "I"))
    sector = _SECTOR_ALIASES.get(sector, sector)
    if sector not in SECTORS:
        return _invalid(source, f"sector {record.get('sector')!r} is not one of {list(SECTORS)}")
    given = record.get("id")
    provenance = {k: v for k, v in record.items() if k not in ("id", "text", "sector", "messages")}
    return {
        "id": str(given) if given not in (None, "") else stable_id(sector, text.strip()),
        "sector": sector,
        "text": text.strip(),
        "source": source,
        "provenance": json.dumps(provenance, ensure_ascii=False, default=str, sort_keys=True),
        "invalid": "",
    }


def _invalid(source: str, reason: str) -> dict:
    return {"id": stable_id("invalid", source), "sector": "", "text": "", "source": source,
            "provenance": "{}", "invalid": reason}


def _parse_jsonl_file(row: dict) -> Iterator[dict]:
    path = row["path"]
    for number, line in enumerate(row["bytes"].decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        source = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            yield _invalid(source, f"malformed JSON ({err.msg} at column {err.colno})")
            continue
        yield normalize(record, source)


def _parse_parquet_file(row: dict) -> Iterator[dict]:
    import io

    import pyarrow.parquet as pq

    path = row["path"]
    try:
        table = pq.read_table(io.BytesIO(row["bytes"]))
    except Exception as err:  # a corrupt file is one invalid input, not a crashed job
        yield _invalid(f"{path}#file", f"unreadable Parquet file ({err})")
        return
    for number, record in enumerate(table.to_pylist()):
        yield normalize(record, f"{path}#{number}")


def _parse_file(row: dict) -> Iterator[dict]:
    return _parse_jsonl_file(row) if row["path"].endswith(_JSONL) else _parse_parquet_file(row)


def read_openings(config: OpeningsInput):
    """A Ray Dataset of opening rows (OPENING_SCHEMA), valid and invalid, from every input file."""
    import ray

    jsonl, parquet = list_input_files(config)
    logger.info("reading opening lines from %d JSONL and %d Parquet file(s) under %s",
                len(jsonl), len(parquet), config.path)
    files = jsonl + parquet
    # Whole files go to the parse tasks, so every row knows its exact file and line/row number.
    return ray.data.read_binary_files(files, include_paths=True).flat_map(_parse_file)
