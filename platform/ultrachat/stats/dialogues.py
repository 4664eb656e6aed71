"""Any dialogue set, read as one canonical row per dialogue.

Three layouts are understood, per file: our generate output (Parquet with ``messages``, ``status``,
``sector``), an HF ``messages`` column of ``{role, content}`` (ultrachat_200k), and ShareGPT's
``conversations`` of ``{from, value}``. One Ray Data read task per file streams it: Parquet by record
batch with only the needed columns (rows named ``file#id`` or ``file#row``), JSONL by line
(``file:line``; such a file is read whole by its task).

A dialogue that cannot be measured (empty, one-sided, non-string content, unknown role) is not
dropped: it becomes a row with ``problem`` set, counted by reason with example sources in the report.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from typing import Any, Iterator

import pyarrow as pa

from ultrachat.errors import InputError
from ultrachat.inputs import EXTENSIONS, Malformed, iter_file_records, list_input_files
from ultrachat.storage import filesystem_for

CANONICAL_SCHEMA = pa.schema([
    ("key", pa.string()),  # content hash: identical dialogues share it (sampling, caches)
    ("source", pa.string()),  # file:line, file#id or file
    ("sector", pa.string()),
    ("status", pa.string()),
    ("roles", pa.list_(pa.string())),  # "user" / "assistant" only; system messages are counted apart
    ("texts", pa.list_(pa.string())),
    ("system_messages", pa.int64()),
    ("problem", pa.string()),  # "" for a measurable dialogue, else why not
])

# ShareGPT speaker names seen in the wild -> chat roles.
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bing": "assistant", "bard": "assistant", "model": "assistant",
                  "system": "system"}
CHAT_ROLES = {"user": "user", "assistant": "assistant", "system": "system"}
_ID_COLUMNS = ("id", "prompt_id")
_FIX = ("Fix: give dialogues as a `messages` column of {role, content} (our generate output, "
        "HF ultrachat_200k) or a ShareGPT `conversations` column of {from, value}")


def content_key(roles: list[str], texts: list[str]) -> str:
    payload = json.dumps([roles, texts], ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(payload.encode("utf-8"), digest_size=12).hexdigest()


def _turns(field: str, turns: Any) -> tuple[list[str], list[str], int, str]:
    """(roles, texts, system messages, problem) of one dialogue's message list."""
    role_key, text_key, names = ("role", "content", CHAT_ROLES) if field == "messages" else \
        ("from", "value", SHAREGPT_ROLES)
    if turns is None or isinstance(turns, (str, bytes)) or not hasattr(turns, "__iter__"):
        return [], [], 0, f"'{field}' is not a list of messages"
    roles, texts, system = [], [], 0
    for number, turn in enumerate(turns):
        if not isinstance(turn, dict):
            return [], [], 0, f"{field}[{number}] is not an object with '{role_key}' and '{text_key}'"
        role = names.get(str(turn.get(role_key) or "").strip().lower())
        if role is None:
            return [], [], 0, f"{field}[{number}] has unknown {role_key} {turn.get(role_key)!r}"
        text = turn.get(text_key)
        if not isinstance(text, str):
            return [], [], 0, f"{field}[{number}].{text_key} is {type(text).__name__}, not a string"
        if role == "system":
            system += 1
            continue
        roles.append(role)
        texts.append(text)
    if not roles:
        return [], [], system, "empty dialogue (no user or assistant messages)"
    if len(set(roles)) == 1:
        return [], [], system, f"one-sided dialogue (only {roles[0]} messages)"
    return roles, texts, system, ""


def to_canonical(record: Any, source: str) -> dict:
    """One input record (a JSON object or a Parquet row) -> a canonical row."""
    row = {"key": "", "source": source, "sector": None, "status": None, "roles": [], "texts": [],
           "system_messages": 0, "problem": ""}
    if isinstance(record, Malformed):
        row["problem"] = record.reason
        return row
    if not isinstance(record, dict):
        row["problem"] = f"record is {type(record).__name__}, not an object"
        return row
    field = "messages" if "messages" in record else "conversations" if "conversations" in record else None
    if field is None:
        row["problem"] = f"no 'messages' or 'conversations' field (has {sorted(record)[:8]})"
        return row
    record_id = next((record[c] for c in _ID_COLUMNS if record.get(c) is not None), None)
    if record_id is not None and "#" in source:  # a Parquet row: named by its id rather than its number
        row["source"] = f"{source.rsplit('#', 1)[0]}#{record_id}"
    for column in ("sector", "status"):
        value = record.get(column)
        row[column] = None if value is None else str(value)
    roles, texts, system, problem = _turns(field, record[field])
    row.update(roles=roles, texts=texts, system_messages=system, problem=problem)
    if not problem:
        row["key"] = content_key(roles, texts)
    return row


def _parquet_columns(path: str) -> list[str]:
    import pyarrow.parquet as pq

    filesystem, root = filesystem_for(path)
    try:
        names = pq.read_schema(root, filesystem=filesystem).names
    except Exception as err:
        raise InputError(f"input.path: {path} is not a readable Parquet file ({err}). Fix: replace or remove "
                         f"it") from None
    dialogue = [c for c in ("messages", "conversations") if c in names]
    if not dialogue:
        raise InputError(f"input.path: {path} has no 'messages' or 'conversations' column (columns: "
                         f"{names[:12]}). {_FIX}")
    return dialogue[:1] + [c for c in ("sector", "status", *_ID_COLUMNS) if c in names]


_ROWS_PER_BLOCK = 512


def _file_rows(path: str, columns: list[str]) -> Iterator[dict]:
    """Canonical rows of one file, streamed: Parquet by record batch (only ``columns``, rows named
    ``file#id`` or ``file#row``), JSONL line by line (``file:line``)."""
    if columns:
        import pyarrow.parquet as pq

        filesystem, root = filesystem_for(path)
        number = 0
        with filesystem.open_input_file(root) as handle:
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=_ROWS_PER_BLOCK, columns=columns):
                for record in batch.to_pylist():
                    yield to_canonical(record, f"{path}#{number}")
                    number += 1
        return
    filesystem, root = filesystem_for(path)
    with filesystem.open_input_stream(root) as stream:
        data = stream.read()
    for source, record in iter_file_records(path, data):
        yield to_canonical(record, source)


def _read_files(batch: pa.Table) -> Iterator[pa.Table]:
    """Ray Data batch function: files (path, Parquet columns) in, canonical rows out in blocks of
    _ROWS_PER_BLOCK."""
    rows = []
    for file in batch.to_pylist():
        for row in _file_rows(file["path"], file["columns"]):
            rows.append(row)
            if len(rows) == _ROWS_PER_BLOCK:
                yield pa.Table.from_pylist(rows, schema=CANONICAL_SCHEMA)
                rows = []
    if rows:
        yield pa.Table.from_pylist(rows, schema=CANONICAL_SCHEMA)


def input_files(path: str, fmt: str) -> dict[str, list[str]]:
    """Each input file under ``path`` -> the Parquet columns to read ([] for JSONL). Parquet schemas
    are checked here, before any work, so a file without a dialogue column fails the job, named."""
    return {f: _parquet_columns(f) if f.endswith(EXTENSIONS["parquet"]) else []
            for f in list_input_files(path, fmt, "input.path")}


def read_dialogues(files: dict[str, list[str]], readers: int):
    """A Ray Dataset of canonical rows (CANONICAL_SCHEMA) over every input file.

    One read task per file, at most ``readers`` at once, each reserving no CPU: reading is light next
    to the metrics, and Ray Data's own file readers start with a file-listing task that needs a whole
    CPU, which an actor pool holding every CPU (2 actors on 2 cores) would starve forever."""
    import ray

    items = [{"path": path, "columns": columns} for path, columns in files.items()]
    return ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        _read_files, batch_size=1, batch_format="pyarrow", num_cpus=0,
        compute=ray.data.TaskPoolStrategy(size=max(1, readers)))


def describe_files(files: dict[str, list[str]]) -> str:
    parquet = sum(1 for columns in files.values() if columns)
    shown = ", ".join(posixpath.basename(f) for f in list(files)[:3]) + (" ..." if len(files) > 3 else "")
    return f"{parquet} Parquet + {len(files) - parquet} JSONL files ({shown})"
