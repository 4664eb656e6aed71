"""Dialogues -> training examples: token ids and labels with loss on assistant tokens only.

The labels come from the chat template's ``{% generation %}`` spans
(``apply_chat_template(return_assistant_tokens_mask=True)``): the assistant text and its end-of-turn
token train, everything else is -100. A dialogue longer than ``max_seq_len`` is split at round
boundaries, as the paper did (a later piece loses the earlier context; a system message is repeated
at the start of every piece). Unlike the paper's splitter, no round is ever dropped: the last round
always ends a piece (their code lost it when the limit was crossed exactly there). A single round
longer than the limit is truncated to it and counted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

IGNORE_INDEX = -100


@dataclass
class SplitStats:
    dialogues: int = 0
    examples: int = 0
    split_dialogues: int = 0  # dialogues that became more than one example
    truncated_rounds: int = 0  # single rounds longer than max_seq_len, cut to it
    no_trainable_tokens: int = 0  # examples whose assistant tokens were all cut away (skipped)
    counts: Counter = field(default_factory=Counter)


def encode(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of a whole conversation under the tokenizer's chat template."""
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
    if not any(mask):
        raise ValueError("the chat template marks no assistant tokens: it needs {% generation %} around the "
                         "assistant content. Fix: set train.chat_template: ultrachat (the built-in UltraChat "
                         "format) or a template with generation markers")
    return ids, [t if m else IGNORE_INDEX for t, m in zip(ids, mask)]


def split_rounds(messages: list[dict]) -> tuple[list[dict], list[list[dict]]]:
    """(system messages, rounds): each round is a user turn and the assistant's answer."""
    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    body = messages[len(system):]
    return system, [body[i:i + 2] for i in range(0, len(body), 2)]


def dialogue_examples(tokenizer, messages: list[dict], max_seq_len: int, stats: SplitStats) -> list[dict]:
    """The training examples of one dialogue: whole if it fits, else pieces of consecutive rounds."""
    system, rounds = split_rounds(messages)
    stats.dialogues += 1
    examples: list[dict] = []
    start = 0
    while start < len(rounds):
        end = start + 1
        ids, labels = encode(tokenizer, system + [m for r in rounds[start:end] for m in r])
        if len(ids) > max_seq_len:  # one round alone is too long: keep what fits
            stats.truncated_rounds += 1
            ids, labels = ids[:max_seq_len], labels[:max_seq_len]
        else:
            # Grow the piece one round at a time while it still fits; the last round always lands in a piece.
            while end < len(rounds):
                more = encode(tokenizer, system + [m for r in rounds[start:end + 1] for m in r])
                if len(more[0]) > max_seq_len:
                    break
                ids, labels, end = more[0], more[1], end + 1
        if any(label != IGNORE_INDEX for label in labels):
            examples.append({"input_ids": ids, "labels": labels})
        else:
            stats.no_trainable_tokens += 1
        start = end
    stats.examples += len(examples)
    stats.split_dialogues += len(examples) > 1
    return examples
