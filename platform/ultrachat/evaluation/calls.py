"""Which calls an evaluation makes, each named by a content key: the cache is keyed by what was asked.

An answer's key hashes the conversation sent, the endpoint, model, revision and sampling: a re-run,
another candidate set or a new prompt pays only for calls not in the cache, while a change of any of
them (a new fine-tune's revision, another temperature) asks again. A judgment's key hashes the judge
(endpoint, model, sampling, prompt template, output mode) and the texts it is shown, so new answers
are judged anew and nothing else is.
"""

from __future__ import annotations

import hashlib
import json

from ultrachat.config.evaluation import JUDGE, Candidate, EvalJudge, EvaluateStage
from ultrachat.evaluation.judging import PAIRWISE, SINGLE, pairwise_messages, single_messages
from ultrachat.evaluation.prompts import Prompt

ANSWER = "answer"

def content_key(spec: dict) -> str:
    return hashlib.sha1(json.dumps(spec, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:24]


def answer_messages(candidate: Candidate, prompt: Prompt) -> list[dict[str, str]]:
    system = [{"role": "system", "content": candidate.system_prompt}] if candidate.system_prompt else []
    return system + prompt.chat_messages()


def answer_key(candidate: Candidate, messages: list[dict[str, str]]) -> str:
    return content_key({"messages": messages, "base_url": candidate.chat.base_url, "model": candidate.chat.model,
                    "revision": candidate.revision, "sampling": candidate.sampling.model_dump()})


def judge_identity(judge: EvalJudge) -> dict:
    return {"base_url": judge.chat.base_url, "model": judge.chat.model, "sampling": judge.sampling.model_dump(),
            "structured_output": judge.structured_output, "system": judge.system_prompt,
            "reminder": judge.format_reminder, "max_answer_chars": judge.max_answer_chars}


def judgment_key(judge: EvalJudge, messages: list[dict[str, str]]) -> str:
    # The rendered messages hold the template, the question and the answers in their order.
    return content_key({"judge": judge_identity(judge), "messages": messages})


def answer_calls(config: EvaluateStage, prompts: list[Prompt]) -> tuple[list[dict], dict]:
    """(call rows, (prompt id, candidate) -> key). Identical calls (a prompt listed twice) run once.

    Prompt-major: every batch holds calls for every candidate, so all endpoints work at once (candidate-
    major, one endpoint's concurrency cap bounded the whole wave: 0.48 of C/L in bench/evaluation.py).
    """
    rows: dict[str, dict] = {}
    keys: dict[tuple[str, str], str] = {}
    for prompt in prompts:
        for candidate in config.candidates:
            messages = answer_messages(candidate, prompt)
            key = answer_key(candidate, messages)
            keys[(prompt.id, candidate.name)] = key
            rows.setdefault(key, {"key": key, "kind": ANSWER, "endpoint": candidate.name,
                                  "messages": json.dumps(messages, ensure_ascii=False)})
    return list(rows.values()), keys


def judgment_calls(config: EvaluateStage, prompts: list[Prompt], answers: dict[tuple[str, str], str]
                   ) -> tuple[list[dict], dict]:
    """Judge calls for every prompt whose answers exist: ``answers`` is (prompt id, candidate) -> text.

    Returns (call rows, what each key judges): pairwise (prompt id, "pairwise", first, second) with
    both orders of every pair, single (prompt id, "single", candidate).
    """
    judge = config.judge
    rows: dict[str, dict] = {}
    meaning: dict[tuple, str] = {}

    def add(protocol: str, what: tuple, messages: list[dict[str, str]]) -> None:
        key = judgment_key(judge, messages)
        meaning[what] = key
        rows.setdefault(key, {"key": key, "kind": protocol, "endpoint": JUDGE,
                              "messages": json.dumps(messages, ensure_ascii=False)})

    for prompt in prompts:
        if PAIRWISE in config.protocols:
            for a, b in config.pairs():
                if (prompt.id, a) not in answers or (prompt.id, b) not in answers:
                    continue
                for first, second in ((a, b), (b, a)):
                    add(PAIRWISE, (prompt.id, PAIRWISE, first, second), pairwise_messages(
                        judge, prompt.question, answers[(prompt.id, first)], answers[(prompt.id, second)]))
        if SINGLE in config.protocols:
            for candidate in config.candidates:
                if (prompt.id, candidate.name) in answers:
                    add(SINGLE, (prompt.id, SINGLE, candidate.name),
                        single_messages(judge, prompt.question, answers[(prompt.id, candidate.name)]))
    return list(rows.values()), meaning


def planned_judgments(config: EvaluateStage, prompts: int) -> int:
    """Judge calls for ``prompts`` prompts when every answer exists (the dry run's upper bound)."""
    pairwise = 2 * len(config.pairs()) * prompts if PAIRWISE in config.protocols else 0
    single = len(config.candidates) * prompts if SINGLE in config.protocols else 0
    return pairwise + single
