"""The prompts of a preferences run: from the generate job's openings or dialogues, or any records
with ``prompt`` or ``messages``, read on the driver (tens of thousands of prompts, as UltraFeedback's
64k) and deduplicated by their content.

A multi-turn record is cut at a user turn (``prompts.cut``: first, last, or one drawn per record,
seeded by its id), and the turns before it are the prompt's context; the answers after it are not
used. ``prompt_id`` is the SHA-256 of the prompt text for a single turn (as in ultrafeedback_binarized)
and of the whole context otherwise. Records that cannot give a prompt are counted by reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections import Counter
from dataclasses import dataclass

from ultrachat import storage
from ultrachat.config.preferences import PromptSource
from ultrachat.errors import InputError
from ultrachat.inputs import Malformed, iter_file_records, list_input_files

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreferencePrompt:
    id: str
    messages: tuple  # ({role, content}, ...) ending with the user turn to answer
    source: str  # file:line of the record it came from

    @property
    def text(self) -> str:
        return self.messages[-1]["content"]

    def question(self) -> str:
        """What the judge is shown: the question, or the conversation as ``ROLE: text`` lines."""
        if len(self.messages) == 1:
            return self.text
        return "\n\n".join(f"{m['role'].upper()}: {m['content']}" for m in self.messages)


def prompt_id(messages: list[dict]) -> str:
    if len(messages) == 1:
        return hashlib.sha256(messages[0]["content"].encode()).hexdigest()
    return hashlib.sha256(json.dumps(messages, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


def _turns(record) -> tuple[list[dict] | None, str]:
    if not isinstance(record, dict):
        return None, "not_an_object"
    status = record.get("status")
    if status is not None and status != "kept":
        return None, "status_not_kept"
    if isinstance(record.get("messages"), list):
        messages = record["messages"]
    elif isinstance(record.get("prompt"), str):
        messages = [{"role": "user", "content": record["prompt"]}]
    elif isinstance(record.get("text"), str):  # an opening line of the generate job's input
        messages = [{"role": "user", "content": record["text"]}]
    else:
        return None, "no_prompt_messages_or_text"
    turns = []
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") \
                or not isinstance(m.get("content"), str) or not m["content"].strip():
            return None, "bad_turn"
        turns.append({"role": m["role"], "content": m["content"].strip()})
    return turns, ""


def cut_at_user_turn(messages: list[dict], cut: str, seed_text: str) -> list[dict] | None:
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        return None
    if cut == "first":
        at = users[0]
    elif cut == "last":
        at = users[-1]
    else:
        at = random.Random(seed_text).choice(users)
    return messages[:at + 1]


def prompt_from_record(record, source: str, config: PromptSource) -> tuple[PreferencePrompt | None, str]:
    turns, reason = _turns(record)
    if turns is None:
        return None, reason
    record_id = str(record.get("id") or record.get("prompt_id") or source)
    context = cut_at_user_turn(turns, config.cut, f"{config.seed}:{record_id}")
    if context is None:
        return None, "no_user_turn"
    return PreferencePrompt(prompt_id(context), tuple(context), source), ""


def _records(config: PromptSource):
    for index, path in enumerate(config.paths):
        for file in list_input_files(path, "auto", key=f"prompts.paths[{index}]"):
            filesystem, inner = storage.filesystem_for(file)
            with filesystem.open_input_stream(inner) as stream:
                data = stream.read()
            yield from iter_file_records(file, data)


def load_prompts(config: PromptSource) -> tuple[list[PreferencePrompt], Counter]:
    """(distinct prompts in input order, counts by outcome). Raises InputError when none is usable."""
    counts: Counter = Counter()
    prompts: dict[str, PreferencePrompt] = {}
    for source, record in _records(config):
        if config.limit and len(prompts) >= config.limit:
            break
        counts["records"] += 1
        if isinstance(record, Malformed):
            counts["skipped_malformed"] += 1
            if counts["skipped_malformed"] <= 5:
                logger.warning("%s: skipped, %s", source, record.reason)
            continue
        prompt, reason = prompt_from_record(record, source, config)
        if prompt is None:
            counts[f"skipped_{reason}"] += 1
        elif prompt.id in prompts:
            counts["duplicate_prompts"] += 1
        else:
            prompts[prompt.id] = prompt
    counts["prompts"] = len(prompts)
    if not prompts:
        skipped = {k: v for k, v in counts.items() if k.startswith("skipped_")}
        raise InputError(f"prompts.paths: no usable prompt in {counts['records']} records ({skipped}). Fix: give "
                         f"records with 'prompt' (text), 'messages' ([{{role, content}}, ...] with a user turn) or "
                         f"'text' (an opening line), and status 'kept' if they have one")
    return list(prompts.values()), counts
