"""The judge's side: its prompts, the JSON schemas of its verdicts, and the parsers of its replies.

A verdict is parsed as JSON first (what a schema-constrained endpoint returns), then as text in the
forms judges write ("verdict: A", MT-bench's "[[A]]", "Score: 7", "Rating: [[7]]"). Anything else
is ``None``: the caller retries once with a reminder, then counts it, never guesses.
"""

from __future__ import annotations

import json
import re

from ultrachat.config.evaluation import EvalJudge

PAIRWISE, SINGLE = "pairwise", "single"
VERDICTS = ("A", "B", "tie")

PAIRWISE_SCHEMA = {
    "type": "object",
    "properties": {"reason": {"type": "string", "maxLength": 600}, "verdict": {"type": "string", "enum": list(VERDICTS)}},
    "required": ["reason", "verdict"], "additionalProperties": False,
}
SINGLE_SCHEMA = {
    "type": "object",
    "properties": {"reason": {"type": "string", "maxLength": 600},
                   "score": {"type": "integer", "minimum": 1, "maximum": 10}},
    "required": ["reason", "score"], "additionalProperties": False,
}
SCHEMAS = {PAIRWISE: PAIRWISE_SCHEMA, SINGLE: SINGLE_SCHEMA}


def response_format(protocol: str) -> dict:
    """OpenAI's structured-output request (vLLM's OpenAI server takes the same)."""
    return {"type": "json_schema",
            "json_schema": {"name": f"{protocol}_verdict", "schema": SCHEMAS[protocol], "strict": True}}


def cut(text: str, limit: int) -> tuple[str, bool]:
    return (text, False) if len(text) <= limit else (text[:limit] + "\n[... answer cut for the judge]", True)


def pairwise_messages(config: EvalJudge, question: str, answer_a: str, answer_b: str) -> list[dict[str, str]]:
    body = config.pairwise_prompt.format(question=question, answer_a=cut(answer_a, config.max_answer_chars)[0],
                                         answer_b=cut(answer_b, config.max_answer_chars)[0])
    return _with_system(config, body)


def single_messages(config: EvalJudge, question: str, answer: str) -> list[dict[str, str]]:
    return _with_system(config, config.single_prompt.format(question=question,
                                                            answer=cut(answer, config.max_answer_chars)[0]))


def _with_system(config: EvalJudge, body: str) -> list[dict[str, str]]:
    system = [{"role": "system", "content": config.system_prompt}] if config.system_prompt else []
    return system + [{"role": "user", "content": body}]


# ------------------------------------------------------------------------------------------- parsing

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)
_OBJECT = re.compile(r"\{.*\}", re.DOTALL)
_BRACKETED = re.compile(r"\[\[\s*(A|B|C|tie)\s*\]\]", re.IGNORECASE)
_LABELLED = re.compile(r"(?:verdict|winner|better answer|final answer)\s*(?:is)?\s*[:=]?\s*\**\s*\"?"
                       r"(?:answer\s+|assistant\s+)?\b(A|B|tie)\b", re.IGNORECASE)
_SCORE = re.compile(r"(?:score|rating)\s*(?:is)?\s*[:=]?\s*\**\s*\[*\s*(\d+(?:\.\d+)?)\s*\]*\s*(?:/\s*10)?",
                    re.IGNORECASE)


def json_object(text: str) -> dict | None:
    for candidate in [*_FENCE.findall(text), text]:
        match = _OBJECT.search(candidate)
        if not match:
            continue
        try:
            value = json.loads(match.group(0))
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def parse_pairwise(text: str) -> str | None:
    """"A", "B" or "tie" (the answer shown first, second, neither), or None when the reply has none."""
    obj = json_object(text)
    if obj is not None and isinstance(obj.get("verdict"), str):
        return _normalize_verdict(obj["verdict"])
    found = _BRACKETED.findall(text)
    if found:
        return _normalize_verdict(found[-1])
    found = _LABELLED.findall(text)
    return _normalize_verdict(found[-1]) if found else None


def _normalize_verdict(value: str) -> str | None:
    value = value.strip().strip("[]\"' .").lower()
    return {"a": "A", "b": "B", "tie": "tie", "c": "tie"}.get(value)  # MT-bench writes a tie as [[C]]


def parse_score(text: str) -> float | None:
    """The 1-10 score, or None when the reply has none in range."""
    obj = json_object(text)
    if obj is not None and "score" in obj:
        return _in_range(obj["score"])
    found = _SCORE.findall(text)
    return _in_range(found[-1]) if found else None


def _in_range(value: object) -> float | None:
    try:
        score = float(value)
    except (TypeError, ValueError):
        return None
    return score if 1 <= score <= 10 else None


def parse_verdict(protocol: str, text: str) -> str | None:
    """The verdict as stored in the cache: "A"/"B"/"tie" or the score as text; None if unparseable."""
    if protocol == PAIRWISE:
        return parse_pairwise(text)
    score = parse_score(text)
    return None if score is None else f"{score:g}"


def schema_rejected(error_message: str) -> bool:
    """An HTTP 400 that refuses the structured-output request itself (the endpoint lacks it)."""
    text = error_message.lower()
    return any(word in text for word in ("response_format", "json_schema", "structured", "guided", "grammar"))
