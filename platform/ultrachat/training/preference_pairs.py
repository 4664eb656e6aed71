"""Preference records -> DPO training rows: a shared prompt and two answers, labels on the answers only.

Accepted layouts (``method: dpo``):

- ``ultrafeedback_binarized`` and this platform's preferences job: ``chosen`` and ``rejected`` are
  ``messages`` lists ``[{role, content}, ...]`` that share every turn but the last, an assistant turn;
- TRL's "conversational" layout: ``prompt`` a ``messages`` list (ending with a user turn) and
  ``chosen`` / ``rejected`` the answers, each a string or a one-message list;
- plain strings: ``prompt``, ``chosen`` and ``rejected`` texts (the prompt becomes one user turn).

Both sequences are tokenized by the chat template, as SFT is: the prompt is everything before the
last assistant turn's ``{% generation %}`` span, the answer is that span (labels), so prompt masking
is SFT's. A prompt longer than ``dpo.max_prompt_length`` keeps its last tokens (the question nearest
the answer), and answers are cut to fit ``max_seq_len``; both are counted. A record that cannot train
is skipped with a short, stable reason, counted by the caller.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ultrachat.training.dialogues import normalize_dialogue
from ultrachat.training.examples import IGNORE_INDEX, encode

SFT_LAYOUT = "no_chosen_or_rejected"  # the reason that means "this is SFT data": named in the error


def _answer(value: Any) -> str | None:
    """An answer given as text or as a one-assistant-message list."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict) \
            and value[0].get("role") == "assistant" and isinstance(value[0].get("content"), str):
        return value[0]["content"].strip() or None
    return None


def _context(messages: list[dict]) -> list[dict] | None:
    """A prompt conversation: valid turns ending with a user turn (system first, if any)."""
    normalized, reason = normalize_dialogue({"messages": messages + [{"role": "assistant", "content": "x"}]})
    if normalized is None or len(normalized) != len(messages) + 1:
        return None
    return normalized[:-1]


def normalize_pair(record: Any) -> tuple[dict | None, str]:
    """({"context", "chosen", "rejected"}, "") for a usable record, else (None, reason)."""
    if not isinstance(record, dict):
        return None, "not_an_object"
    if "chosen" not in record or "rejected" not in record:
        return None, SFT_LAYOUT
    chosen, rejected, prompt = record["chosen"], record["rejected"], record.get("prompt")
    if isinstance(chosen, list) and isinstance(rejected, list) and len(chosen) > 1:
        # Whole conversations: the shared turns are the context, the last turns the answers.
        if len(chosen) != len(rejected) or chosen[:-1] != rejected[:-1]:
            return None, "chosen_and_rejected_have_different_prompts"
        context = _context(chosen[:-1])
        chosen, rejected = _answer(chosen[-1:]), _answer(rejected[-1:])
    elif isinstance(prompt, str) and prompt.strip():
        context = [{"role": "user", "content": prompt.strip()}]
        chosen, rejected = _answer(chosen), _answer(rejected)
    elif isinstance(prompt, list):
        context = _context(prompt)
        chosen, rejected = _answer(chosen), _answer(rejected)
    else:
        return None, "no_prompt"
    if context is None:
        return None, "bad_prompt_turns"
    if chosen is None or rejected is None:
        return None, "empty_or_non_text_answer"
    if chosen == rejected:
        return None, "identical_chosen_and_rejected"
    return {"context": context, "chosen": chosen, "rejected": rejected}, ""


def _last_answer(tokenizer, context: list[dict], answer: str) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids): the conversation's tokens before and inside its last assistant span."""
    ids, labels = encode(tokenizer, context + [{"role": "assistant", "content": answer}])
    end = max(i for i, label in enumerate(labels) if label != IGNORE_INDEX) + 1
    start = end
    while start > 0 and labels[start - 1] != IGNORE_INDEX:
        start -= 1
    return ids[:start], ids[start:end]


def pair_example(tokenizer, pair: dict, max_seq_len: int, max_prompt_length: int,
                 counts: Counter) -> dict | None:
    """The training row of one pair: chosen and rejected ids and labels over the same prompt tokens."""
    prompt, chosen = _last_answer(tokenizer, pair["context"], pair["chosen"])
    prompt_r, rejected = _last_answer(tokenizer, pair["context"], pair["rejected"])
    if prompt_r != prompt:  # a template whose prompt tokens depend on the answer: compare like with like
        raise ValueError("the chat template renders the prompt differently for the chosen and the rejected "
                         "answer; fix: use train.chat_template: ultrachat, or a template whose turns do not "
                         "depend on later turns")
    if len(prompt) > max_prompt_length:
        prompt = prompt[-max_prompt_length:]
        counts["prompt_truncated"] += 1
    room = max_seq_len - len(prompt)
    if len(chosen) > room or len(rejected) > room:
        counts["answer_truncated"] += 1
        chosen, rejected = chosen[:room], rejected[:room]
    if chosen == rejected:  # equal once tokenized or cut: nothing to prefer
        counts["skipped_identical_after_truncation"] += 1
        return None
    masked = [IGNORE_INDEX] * len(prompt)
    return {"chosen_input_ids": prompt + chosen, "chosen_labels": masked + chosen,
            "rejected_input_ids": prompt + rejected, "rejected_labels": masked + rejected,
            "num_tokens": 2 * len(prompt) + len(chosen) + len(rejected)}
