"""Coherence: a judge LLM scores whole dialogues 1-10 through the platform's OpenAI backend (retries,
RPM/TPM limits). A verdict without a parseable score in range is kept and counted, never guessed."""

from __future__ import annotations

import asyncio
import hashlib
import re

from ultrachat.config.stats import Judge
from ultrachat.llm.openai_backend import estimate_prompt_tokens

_SCORE = re.compile(r"score\s*(?:[:=]|is)?\s*\**\s*(\d+(?:\.\d+)?)\s*(?:/\s*10)?", re.IGNORECASE)
_BARE = re.compile(r"^\s*\**\s*(\d+(?:\.\d+)?)\s*(?:/\s*10)?\s*\**\s*$")


def parse_score(verdict: str) -> float | None:
    """The last `Score: N` (or a verdict that is just a number), if it lies in 1..10."""
    found = _SCORE.findall(verdict) or _BARE.findall(verdict)
    if not found:
        return None
    score = float(found[-1])
    return score if 1 <= score <= 10 else None


def judge_messages(config: Judge, roles: list[str], texts: list[str]) -> list[dict[str, str]]:
    """The rubric as the system message; the dialogue, whole turns first, cut to judge.max_chars."""
    lines, used = [], 0
    for number, (role, text) in enumerate(zip(roles, texts), 1):
        line = f"[{number}] {role.upper()}: {text}"
        if used + len(line) > config.max_chars:
            lines.append(f"[{number}] {role.upper()}: {text[: max(0, config.max_chars - used)]} [... cut]")
            break
        lines.append(line)
        used += len(line)
    body = "Conversation:\n\n" + "\n\n".join(lines) + "\n\nRate its coherence now."
    return [{"role": "system", "content": config.rubric}, {"role": "user", "content": body}]


def judge_id(config: Judge) -> str:
    """Names the scores in the cache: another judge model, rubric or sampling never reuses them."""
    spec = "|".join([config.chat.base_url, config.chat.model, config.rubric, config.sampling.model_dump_json(),
                     str(config.max_chars)])
    return hashlib.sha1(spec.encode()).hexdigest()[:16]


def planned_tokens(config: Judge, chars: int) -> int:
    # The plan has no dialogue texts, only their size: the same ~4 characters per token rule.
    return estimate_prompt_tokens([{"content": config.rubric}, {"content": "x" * min(chars, config.max_chars)}])


async def _judge_all(config: Judge, dialogues: list[tuple[str, list[str], list[str]]]) -> list[dict]:
    from ultrachat.llm.base import ChatError
    from ultrachat.llm.openai_backend import OpenAIChatBackend

    backend = OpenAIChatBackend(config.chat)

    async def one(key: str, roles: list[str], texts: list[str]) -> dict:
        try:
            result = await backend.chat(judge_messages(config, roles, texts), config.sampling)
        except ChatError as err:
            return {"key": key, "score": None, "verdict": "", "error": f"{err.reason}: {err}"}
        score = parse_score(result.text)
        return {"key": key, "score": score, "verdict": result.text[:2000],
                "error": "" if score is not None else "unparseable"}

    try:
        return await asyncio.gather(*(one(*d) for d in dialogues))
    finally:
        await backend.close()


def judge_dialogues(config: Judge, dialogues: list[tuple[str, list[str], list[str]]]) -> list[dict]:
    """(key, roles, texts) -> {key, score, verdict, error} each; calls run concurrently up to
    judge.chat.max_concurrency."""
    return asyncio.run(_judge_all(config, dialogues))
