"""Read opening lines (JSONL or Parquet, a file or a folder, local or any pyarrow URI) as a Ray Dataset.

A JSONL record needs ``text`` (or ``messages``, whose first user turn is used); ``id`` and ``sector``
(I, II, III) are optional and every other field is kept as provenance. A malformed line does not stop
the job: it becomes a row with ``invalid`` set, naming its file and line, and ends as an
``invalid:<reason>`` record in the output so every line has exactly one recorded status.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ultrachat import inputs
from ultrachat.config.generation import SECTORS, OpeningsInput
from ultrachat.ids import stable_id

logger = logging.getLogger(__name__)

_SECTOR_ALIASES = {"1": "I", "2": "II", "3": "III"}


def list_input_files(config: OpeningsInput) -> list[str]:
    """The JSONL / Parquet files under ``config.path``; a clear error if there are none."""
    return inputs.list_input_files(config.path, config.format, "openings.path")


def normalize(record: Any, source: str) -> dict:
    """One input record -> an opening row (OPENING_SCHEMA); never raises."""
    if isinstance(record, inputs.Malformed):
        return _invalid(source, record.reason)
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
    provenance = {k: v for k, v in record.items() if k not in ("id", "text", "sector", "messages", "provenance")}
    # Openings this platform built carry their provenance as one JSON object: merge it, don't nest it.
    built = record.get("provenance")
    if isinstance(built, str):
        try:
            built = json.loads(built)
        except json.JSONDecodeError:
            built = {"provenance": built}
    if isinstance(built, dict):
        provenance = {**built, **provenance}
    elif built is not None:
        provenance["provenance"] = built
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


def read_openings(config: OpeningsInput):
    """A Ray Dataset of opening rows (OPENING_SCHEMA), valid and invalid, from every input file."""
    files = list_input_files(config)
    logger.info("reading opening lines from %d file(s) under %s", len(files), config.path)
    return inputs.read_records(files, normalize)
