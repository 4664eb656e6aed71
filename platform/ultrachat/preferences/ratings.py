"""The judge's aspect ratings: the JSON schema asked for, the prompt that asks, and the parser.

A reply is read as JSON first (``{"<aspect>": {"rationale": ..., "rating": 1-5}, ...}``, what a
schema-constrained endpoint returns), then as text (``Helpfulness: 4`` or ``honesty - 3/5`` lines).
Every configured aspect must be rated 1-5, else the reply is unparseable: the caller asks once more
with a reminder, then counts it, never guesses.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ultrachat.config.preferences import PreferenceJudge
from ultrachat.evaluation.judging import json_object, cut

ASPECTS = "aspects"  # the protocol name in call records


def ratings_schema(aspects: list[str]) -> dict:
    rating = {"type": "object", "properties": {"rationale": {"type": "string", "maxLength": 400},
                                               "rating": {"type": "integer", "minimum": 1, "maximum": 5}},
              "required": ["rationale", "rating"], "additionalProperties": False}
    return {"type": "object", "properties": {a: rating for a in aspects}, "required": list(aspects),
            "additionalProperties": False}


def reply_format(aspects: list[str]) -> str:
    """The reply format in words, for the prompt's {format}."""
    return "{" + ", ".join(f'"{a}": {{"rationale": "<one sentence>", "rating": <1-5>}}' for a in aspects) + "}"


def rating_messages(judge: PreferenceJudge, question: str, answer: str) -> list[dict[str, str]]:
    names = [a.name for a in judge.aspects]
    rubrics = "\n".join(f"- {a.name}: {a.rubric}" for a in judge.aspects)
    body = judge.prompt.format(rubrics=rubrics, question=question, answer=cut(answer, judge.max_answer_chars)[0],
                               format=reply_format(names))
    system = [{"role": "system", "content": judge.system_prompt}] if judge.system_prompt else []
    return system + [{"role": "user", "content": body}]


def _rating(value) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number == int(number) and 1 <= number <= 5 else None


def parse_ratings(aspects: list[str], text: str) -> dict | None:
    """{aspect: {"rating": 1-5, "rationale": str}} with every aspect rated, or None."""
    found: dict[str, dict] = {}
    obj = json_object(text)
    if obj is not None:
        for aspect in aspects:
            entry = obj.get(aspect)
            if isinstance(entry, dict) and _rating(entry.get("rating")) is not None:
                found[aspect] = {"rating": _rating(entry["rating"]), "rationale": str(entry.get("rationale", ""))}
            elif _rating(entry) is not None:  # {"honesty": 4}
                found[aspect] = {"rating": _rating(entry), "rationale": ""}
    for aspect in aspects:
        if aspect in found:
            continue
        words = r"[\s_-]*".join(re.escape(w) for w in aspect.split("_"))
        match = re.search(rf"\b{words}\b\**\s*(?:rating)?\s*[:=-]\s*\**\s*\[*(\d(?:\.0)?)\]*\s*(?:/\s*5)?(.*)",
                          text, re.IGNORECASE)
        if match and _rating(match.group(1)) is not None:
            found[aspect] = {"rating": _rating(match.group(1)), "rationale": match.group(2).strip(" .-:")[:400]}
    return found if len(found) == len(aspects) else None


@dataclass(frozen=True)
class AspectProtocols:
    """The CallHandler's judge protocols for the preferences job (evaluation/worker.py)."""

    aspects: tuple[str, ...]
    structured_output: str
    format_reminder: str

    def parse(self, protocol: str, text: str) -> str | None:
        ratings = parse_ratings(list(self.aspects), text)
        return None if ratings is None else json.dumps(ratings, ensure_ascii=False)

    def response_format(self, protocol: str) -> dict:
        return {"type": "json_schema", "json_schema": {"name": "aspect_ratings",
                                                       "schema": ratings_schema(list(self.aspects)), "strict": True}}


def mean_rating(ratings: dict) -> float:
    """UltraFeedback's corrected overall score: the mean of the aspect ratings (Argilla)."""
    return sum(r["rating"] for r in ratings.values()) / len(ratings)
