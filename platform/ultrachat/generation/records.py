"""The output record: one row per opening line, whatever happened to it.

The Arrow schema is explicit so every Parquet shard has the same one (inference from a batch whose
lists are all empty would give ``list<null>`` and break readers). ``messages`` is a list of
``{role, content}``: the shape of HF ultrachat_200k and of OpenAI chat, so pandas, Ray Data and HF
``datasets`` read it as is.
"""

from __future__ import annotations

import pyarrow as pa

STATUS_KEPT = "kept"

TURN = pa.struct([
    ("role", pa.string()),
    ("model", pa.string()),
    ("finish_reason", pa.string()),
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
])

DIALOGUE_SCHEMA = pa.schema([
    ("id", pa.string()),
    # prompt, prompt_id and messages: the columns of HF ultrachat_200k (prompt_id is our id).
    ("prompt", pa.string()),
    ("prompt_id", pa.string()),
    ("sector", pa.string()),
    ("opening", pa.struct([("text", pa.string()), ("source", pa.string()), ("provenance", pa.string())])),
    ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
    ("num_rounds", pa.int64()),
    ("user_model", pa.string()),
    ("assistant_model", pa.string()),
    ("persona", pa.string()),
    ("turns", pa.list_(TURN)),
    ("usage", pa.struct([
        ("user_prompt_tokens", pa.int64()), ("user_completion_tokens", pa.int64()),
        ("assistant_prompt_tokens", pa.int64()), ("assistant_completion_tokens", pa.int64()),
    ])),
    ("status", pa.string()),
    ("filter_reasons", pa.list_(pa.string())),
    ("error", pa.string()),
    ("started_at", pa.float64()),  # unix time the dialogue started (for throughput analysis)
    ("seconds", pa.float64()),
])

# The columns an opening row carries into the dialogue stage (see openings.py).
OPENING_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("sector", pa.string()),
    ("text", pa.string()),
    ("source", pa.string()),
    ("provenance", pa.string()),
    ("invalid", pa.string()),  # empty for a valid opening, else why it was rejected
])



def empty_usage() -> dict[str, int]:
    return {"user_prompt_tokens": 0, "user_completion_tokens": 0,
            "assistant_prompt_tokens": 0, "assistant_completion_tokens": 0}


def to_table(records: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(records, schema=DIALOGUE_SCHEMA)
