"""Training dialogues from the formats users bring, normalized to ``[{role, content}, ...]``.

- this platform's generation output and HF ultrachat_200k: ``messages`` of ``{role, content}``
  (generation records also carry ``status``; only ``kept`` ones train);
- ShareGPT: ``conversations`` of ``{from, value}`` (human/user, gpt/assistant/chatgpt, system);
- the original UltraChat release: ``data``, a list of strings alternating user / assistant.

A record that cannot train is skipped with a short, stable reason, counted by the caller.
"""

from __future__ import annotations

from typing import Any

_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "chatgpt": "assistant", "bard": "assistant", "system": "system"}


_FIELDS = {"auto": ("messages", "conversations", "data"), "ultrachat": ("messages", "data"),
           "sharegpt": ("conversations",)}


def normalize_dialogue(record: Any, fmt: str = "auto") -> tuple[list[dict] | None, str]:
    """(messages, "") for a usable record, else (None, reason). ``fmt`` (train.data.format) limits
    which fields count: ultrachat = messages / data, sharegpt = conversations, auto = any."""
    if not isinstance(record, dict):
        return None, "not_an_object"
    status = record.get("status")
    if status is not None and status != "kept":
        return None, "status_not_kept"
    record = {key: record[key] for key in _FIELDS[fmt] if key in record}
    if isinstance(record.get("messages"), list):
        turns = [(m.get("role"), m.get("content")) if isinstance(m, dict) else (None, None) for m in record["messages"]]
    elif isinstance(record.get("conversations"), list):
        turns = [(_SHAREGPT_ROLES.get(str(m.get("from", "")).lower()), m.get("value")) if isinstance(m, dict)
                 else (None, None) for m in record["conversations"]]
    elif isinstance(record.get("data"), list):
        turns = [("user" if i % 2 == 0 else "assistant", text) for i, text in enumerate(record["data"])]
    else:
        return None, "no_messages"
    if any(role not in ("system", "user", "assistant") for role, _ in turns):
        return None, "unknown_role"
    if any(not isinstance(content, str) or not content.strip() for _, content in turns):
        return None, "empty_or_non_text_turn"
    messages = [{"role": role, "content": content.strip()} for role, content in turns]
    return _check_order(messages)


def _check_order(messages: list[dict]) -> tuple[list[dict] | None, str]:
    body = messages[1:] if messages and messages[0]["role"] == "system" else messages
    if body and body[-1]["role"] == "user":
        body = body[:-1]  # an unanswered last question teaches nothing
    if not any(m["role"] == "assistant" for m in body):
        return None, "no_assistant_turn"
    if [m["role"] for m in body] != ["user", "assistant"] * (len(body) // 2):
        return None, "roles_do_not_alternate"
    return (messages[:1] if messages[0]["role"] == "system" else []) + body, ""
