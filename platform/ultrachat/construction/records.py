"""The records opening-line construction writes: LLM calls and their results, materials, candidates.

Explicit Arrow schemas, so every Parquet shard has the same one whatever a batch happens to hold.
``context`` and ``provenance`` are JSON objects stored as strings: their keys differ per stage and
sector, and a string keeps one schema for all of them.
"""

from __future__ import annotations

import pyarrow as pa

# One LLM call of a construction stage (a row the ConstructionWorker answers).
CALL_FIELDS = [
    ("call_id", pa.string()),
    ("stage", pa.string()),
    ("sector", pa.string()),
    ("prompt", pa.string()),
    ("want", pa.int64()),  # items asked for in this call
    ("part", pa.int64()),  # this call is part `part` of `parts` for the same parent
    ("parts", pa.int64()),
    ("context", pa.string()),  # JSON: what the children and the opening lines inherit
]
CALL_SCHEMA = pa.schema(CALL_FIELDS)

# The call's outcome: status "ok", "failed:unparseable" (raw kept) or "failed:<chat error reason>".
RESULT_SCHEMA = pa.schema(CALL_FIELDS + [
    ("status", pa.string()),
    ("items", pa.list_(pa.string())),
    ("raw", pa.string()),  # the reply as the model wrote it, kept when it could not be used
    ("error", pa.string()),
    ("model", pa.string()),
    ("finish_reason", pa.string()),
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
    ("started_at", pa.float64()),
    ("seconds", pa.float64()),
])

# A sector-III text piece after URL classification and truncation (invalid records are kept, flagged).
MATERIAL_SCHEMA = pa.schema([
    ("material_id", pa.string()),
    ("material_type", pa.string()),  # "" when the URL matched no keyword
    ("text", pa.string()),
    ("url", pa.string()),
    ("source", pa.string()),  # file:line / file#row
    ("truncated", pa.bool_()),
    ("tokens_before", pa.int64()),
    ("tokens_after", pa.int64()),
    ("invalid", pa.string()),  # empty, or why the record was skipped
])

# An opening-line candidate before de-duplication and sampling.
CANDIDATE_SCHEMA = pa.schema([
    ("key", pa.string()),  # <call id>#<item index>: unique per candidate (ids repeat for equal texts)
    ("id", pa.string()),
    ("sector", pa.string()),
    ("text", pa.string()),
    ("provenance", pa.string()),
    ("group", pa.list_(pa.string())),  # the path sampling balances over, e.g. [topics, Technology, AI]
    ("exact_key", pa.int64()),
    ("near_key", pa.int64()),
    ("bands", pa.list_(pa.int64())),  # MinHash LSH band keys; empty when MinHash is off
])

# The built opening lines: what the dialogue stage (or `openings.path` of a later run) reads.
OPENING_LINE_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("sector", pa.string()),
    ("text", pa.string()),
    ("provenance", pa.string()),
])
