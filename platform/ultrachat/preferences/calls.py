"""Which calls a preferences run makes, each named by a content key (evaluation/calls.py's rule): a
re-run pays only for calls not in the cache; a change of model, sampling, principle or judge asks again.

Per prompt, ``completions_per_prompt`` completion slots: slot i gets the i-th model of the pool in an
order shuffled per prompt (so 4 slots from a pool of 4 or more are 4 different models, as in
UltraFeedback) and a principle drawn by weight, both seeded by the prompt id. The slot is part of the
key, so two slots with the same model and principle are two calls, not one.
"""

from __future__ import annotations

import json
import random

from ultrachat.config.preferences import JUDGE, CompletionModel, PreferencesStage, Principle
from ultrachat.evaluation.calls import ANSWER, content_key
from ultrachat.preferences.prompts import PreferencePrompt
from ultrachat.preferences.ratings import ASPECTS, rating_messages


def slots(config: PreferencesStage, prompt: PreferencePrompt) -> list[tuple[CompletionModel, Principle]]:
    rng = random.Random(f"{config.prompts.seed}:{prompt.id}")
    models = list(config.models)
    rng.shuffle(models)
    weights = [p.weight for p in config.principles]
    return [(models[i % len(models)], rng.choices(config.principles, weights)[0])
            for i in range(config.completions_per_prompt)]


def completion_messages(principle: Principle, prompt: PreferencePrompt) -> list[dict[str, str]]:
    """The principle as the system prompt (ahead of a system turn the context already has)."""
    context = [dict(m) for m in prompt.messages]
    if context and context[0]["role"] == "system":
        context[0]["content"] = f"{principle.system_prompt}\n\n{context[0]['content']}"
        return context
    return [{"role": "system", "content": principle.system_prompt}] + context


def _model_identity(model: CompletionModel) -> dict:
    chat = model.chat
    return {"backend": chat.backend, "model": chat.model, "base_url": getattr(chat, "base_url", None),
            "revision": model.revision, "sampling": model.sampling.model_dump()}


def completion_calls(config: PreferencesStage, prompts: list[PreferencePrompt]) -> tuple[list[dict], dict]:
    """(call rows, (prompt id, slot) -> (key, model name, principle name))."""
    rows, meaning = [], {}
    for prompt in prompts:
        for slot, (model, principle) in enumerate(slots(config, prompt)):
            messages = completion_messages(principle, prompt)
            key = content_key({"messages": messages, "model": _model_identity(model), "slot": slot})
            meaning[(prompt.id, slot)] = (key, model.name, principle.name)
            rows.append({"key": key, "kind": ANSWER, "endpoint": model.name,
                         "messages": json.dumps(messages, ensure_ascii=False)})
    return rows, meaning


def judge_identity(config: PreferencesStage) -> dict:
    judge = config.judge
    return {"backend": judge.chat.backend, "model": judge.chat.model, "base_url": getattr(judge.chat, "base_url", None),
            "sampling": judge.sampling.model_dump(), "structured_output": judge.structured_output,
            "reminder": judge.format_reminder}


def rating_calls(config: PreferencesStage, prompts: list[PreferencePrompt], texts: dict) -> tuple[list[dict], dict]:
    """Rating calls for every completion that exists: ``texts`` is (prompt id, slot) -> text.
    Returns (call rows, (prompt id, slot) -> key)."""
    identity = judge_identity(config)
    rows: dict[str, dict] = {}
    meaning = {}
    for prompt in prompts:
        for slot in range(config.completions_per_prompt):
            if (prompt.id, slot) not in texts:
                continue
            messages = rating_messages(config.judge, prompt.question(), texts[(prompt.id, slot)])
            key = content_key({"judge": identity, "messages": messages})
            meaning[(prompt.id, slot)] = key
            rows.setdefault(key, {"key": key, "kind": ASPECTS, "endpoint": JUDGE,
                                  "messages": json.dumps(messages, ensure_ascii=False)})
    return list(rows.values()), meaning
