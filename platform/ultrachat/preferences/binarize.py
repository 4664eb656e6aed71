"""Rated completions -> one (chosen, rejected) pair per prompt, as Argilla's corrected
``ultrafeedback_binarized``: the score is the mean of the aspect ratings; chosen is the best (a tie at
the top is broken by a seeded draw), rejected a seeded random one of the strictly lower-scored; a
prompt whose rated completions all score the same gives no pair (a tie), nor does one with fewer than
two rated completions. Each outcome is counted by reason.
"""

from __future__ import annotations

import random

from ultrachat.preferences.ratings import mean_rating


def binarize(prompt, completions: list[dict], seed: int) -> tuple[dict | None, str]:
    """``completions``: dicts with ``text``, ``ratings`` (dict or None), ``model``, ``principle``, in
    completion order. Returns (pair row, "") or (None, reason)."""
    rated = [dict(c, score=mean_rating(c["ratings"])) for c in completions if c.get("ratings")]
    if len(rated) < 2:
        return None, "fewer_than_two_rated"
    rng = random.Random(f"{seed}:{prompt.id}")
    best = max(c["score"] for c in rated)
    chosen = rng.choice([c for c in rated if c["score"] == best])
    lower = [c for c in rated if c["score"] < best]
    if not lower:
        return None, "all_tied"
    rejected = rng.choice(lower)
    if chosen["text"].strip() == rejected["text"].strip():
        return None, "identical_texts"
    context = [dict(m) for m in prompt.messages]
    chosen_messages = context + [{"role": "assistant", "content": chosen["text"]}]
    return {"prompt": prompt.text, "prompt_id": prompt.id, "chosen": chosen_messages,
            "rejected": context + [{"role": "assistant", "content": rejected["text"]}],
            "messages": chosen_messages, "score_chosen": chosen["score"], "score_rejected": rejected["score"],
            "chosen_model": chosen["model"], "rejected_model": rejected["model"],
            "chosen_principle": chosen["principle"], "rejected_principle": rejected["principle"]}, ""
