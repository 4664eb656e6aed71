"""results.json's content, built from the prompts, the call plan and the cached records."""

from __future__ import annotations

from collections import Counter

from ultrachat.config.evaluation import EvaluateStage
from ultrachat.evaluation import scoring
from ultrachat.evaluation.judging import PAIRWISE, SINGLE
from ultrachat.evaluation.prompts import Prompt

# The paper's published numbers (GPT-4 judge on these 385 prompts; ../shared/ultrachat-reference.md §5).
PAPER = {
    "judge": "GPT-4",
    "pairwise": {"UltraLM-13B vs Vicuna-13B": {"win": 39.1, "tie": 30.2, "lose": 30.7}},
    "single": {"UltraLM-13B": 9.00, "Vicuna-13B": 8.78, "WizardLM-13B": 8.95, "ChatGPT": 9.31},
}
_EXAMPLES = 3


def words(text: str) -> int:
    return len(text.split())


def build_results(config: EvaluateStage, prompts: list[Prompt], answer_keys: dict, judgment_keys: dict,
                  records: dict[str, dict]) -> dict:
    """``answer_keys``: (prompt id, candidate) -> key; ``judgment_keys``: (prompt id, protocol, ...) -> key;
    ``records``: key -> the cached record of every call (answers and judgments)."""
    boot = config.bootstrap
    classes = Counter(p.klass for p in prompts)
    answers = {what: records.get(key) for what, key in answer_keys.items()}
    results: dict = {"prompts": len(prompts), "classes": dict(classes), "protocols": list(config.protocols),
                     "candidates": _candidates(config, prompts, answers), "paper": PAPER}
    verdicts = {what: records.get(key) for what, key in judgment_keys.items()}
    per_prompt = {p.id: {"id": p.id, "class": p.klass, "question": p.question, "answers": {}, "pairwise": {},
                         "single": {}} for p in prompts}
    for (prompt_id, name), record in answers.items():
        if record is not None:
            per_prompt[prompt_id]["answers"][name] = {"status": record["status"], "text": record["text"],
                                                      "words": words(record["text"]),
                                                      "finish_reason": record["finish_reason"]}
    if PAIRWISE in config.protocols:
        results["pairwise"] = {f"{a} vs {b}": _pair(config, prompts, a, b, answers, verdicts, per_prompt)
                               for a, b in config.pairs()}
    if SINGLE in config.protocols:
        results["single"] = {}
        for candidate in config.candidates:
            by_class: dict[str, list[float]] = {}
            for prompt in prompts:
                record = verdicts.get((prompt.id, SINGLE, candidate.name))
                if record is not None and record["status"] == "ok":
                    by_class.setdefault(prompt.klass, []).append(float(record["verdict"]))
                    per_prompt[prompt.id]["single"][candidate.name] = float(record["verdict"])
            every = [s for scores in by_class.values() for s in scores]
            results["single"][candidate.name] = {
                "overall": scoring.score_summary(every, boot.samples, boot.seed, boot.confidence),
                "per_class": {k: scoring.score_summary(by_class.get(k, []), boot.samples, boot.seed, boot.confidence)
                              for k in classes}}
    results["judge"] = _judge(config, verdicts, results.get("pairwise", {}))
    results["per_prompt"] = list(per_prompt.values())
    return results


def _candidates(config: EvaluateStage, prompts: list[Prompt], answers: dict) -> dict:
    out = {}
    for candidate in config.candidates:
        mine = [answers.get((p.id, candidate.name)) for p in prompts]
        ok = [r for r in mine if r is not None and r["status"] == "ok"]
        failed = [r for r in mine if r is not None and r["status"] != "ok"]
        out[candidate.name] = {
            "base_url": candidate.chat.base_url, "model": candidate.chat.model, "revision": candidate.revision,
            "sampling": candidate.sampling.model_dump(), "answered": len(ok), "failed": len(failed),
            "missing": sum(r is None for r in mine), "errors": dict(Counter(r["status"] for r in failed)),
            "error_examples": [r["error"][:300] for r in failed[:_EXAMPLES]],
            "finish_reasons": dict(Counter(r["finish_reason"] for r in ok)),
            "length_words": scoring.distribution([words(r["text"]) for r in ok]),
            "length_tokens": scoring.distribution([r["completion_tokens"] for r in ok]),
            "empty_answers": sum(not r["text"].strip() for r in ok)}
    return out


def _pair(config: EvaluateStage, prompts: list[Prompt], a: str, b: str, answers: dict, verdicts: dict,
          per_prompt: dict) -> dict:
    boot = config.bootstrap
    outcomes: dict[str, list[float]] = {}
    diffs: list[float] = []
    all_outcomes: list[float] = []
    consistent = incomplete = 0
    for prompt in prompts:
        first, second = verdicts.get((prompt.id, PAIRWISE, a, b)), verdicts.get((prompt.id, PAIRWISE, b, a))
        ab = first["verdict"] if first is not None and first["status"] == "ok" else None
        ba = second["verdict"] if second is not None and second["status"] == "ok" else None
        outcome, agreed = scoring.pair_outcome(ab, ba)
        if outcome is None:
            incomplete += 1
            continue
        consistent += agreed
        outcomes.setdefault(prompt.klass, []).append(outcome)
        all_outcomes.append(outcome)
        diffs.append(words(answers[(prompt.id, a)]["text"]) - words(answers[(prompt.id, b)]["text"]))
        per_prompt[prompt.id]["pairwise"][f"{a} vs {b}"] = {"verdict_a_first": ab, "verdict_b_first": ba,
                                                            "outcome_for_a": outcome, "consistent": agreed}

    def summary(values: list[float]) -> dict:
        return {**scoring.rates(values),
                "ci": scoring.bootstrap_rates(values, boot.samples, boot.seed, boot.confidence)}

    complete = len(all_outcomes)
    return {"a": a, "b": b, "overall": summary(all_outcomes),
            "per_class": {k: summary(outcomes.get(k, [])) for k in dict.fromkeys(p.klass for p in prompts)},
            "complete": complete, "incomplete": incomplete,
            "position_consistency": 100 * consistent / complete if complete else None,
            "length_controlled": scoring.length_controlled(all_outcomes, diffs)}


def _judge(config: EvaluateStage, verdicts: dict, pairwise: dict) -> dict:
    records = [r for r in verdicts.values() if r is not None]
    unparseable = [r for r in records if r["status"] == "unparseable"]
    failed = [r for r in records if r["status"].startswith("failed")]
    parsed = [r for r in records if r["status"] == "ok"]
    complete = sum(p["complete"] for p in pairwise.values())
    consistent = sum(p["complete"] * (p["position_consistency"] or 0) / 100 for p in pairwise.values())
    return {"base_url": config.judge.chat.base_url, "model": config.judge.chat.model,
            "structured_output": config.judge.structured_output, "planned": len(verdicts), "judged": len(records),
            "parsed": len(parsed), "unparseable": len(unparseable), "failed": len(failed),
            "parse_failure_rate": 100 * len(unparseable) / (len(parsed) + len(unparseable)) if parsed or unparseable else None,
            "asked_again": sum(r["attempts"] > 1 for r in records),
            "schema_constrained": sum(bool(r["structured"]) for r in records),
            "position_consistency": 100 * consistent / complete if complete else None,
            "unparseable_examples": [r["text"][:300] for r in unparseable[:_EXAMPLES]],
            "errors": dict(Counter(r["status"] for r in failed)),
            "error_examples": [r["error"][:300] for r in failed[:_EXAMPLES]]}
