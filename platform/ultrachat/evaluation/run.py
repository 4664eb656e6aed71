"""The evaluate job: candidates answer the prompts, a judge compares and scores the answers, and the
report says which model is better, by how much, and how far to trust the judge.

Two waves on one Ray Data actor pool each (stages/pool.py): every answer not yet in the cache, then
every judgment not yet in the cache (both answer orders of every pair, one score per answer). Each
finished batch is a cache shard under ``output_dir/cache/`` at once, so a killed run loses only the
batches in flight and its re-run makes no call twice; a failed call is retried by the next run.
"""

from __future__ import annotations

import json
import logging

from ultrachat import storage
from ultrachat.config.evaluation import JUDGE, EvaluateStage
from ultrachat.evaluation.calls import answer_calls, judgment_calls
from ultrachat.evaluation.prompts import load_prompts
from ultrachat.evaluation.results import build_results
from ultrachat.llm.openai_backend import estimate_prompt_tokens
from ultrachat.observability import dataset_name, run_label
from ultrachat.secret_env import driver_keys
from ultrachat.stages.call_waves import CALL_SCHEMA, cached_calls, check_waves, run_wave
from ultrachat.stages.pool import PoolStage

logger = logging.getLogger(__name__)

CACHE_DIR = "cache"


def run_evaluate(config) -> dict:
    from ultrachat.evaluation.report import write_outputs

    prompts = load_prompts(config.prompts)
    answer_dir, judgment_dir = (storage.join(config.output_dir, CACHE_DIR, kind) for kind in ("answers", "judgments"))
    answer_rows, answer_keys = answer_calls(config, prompts)
    cached = cached_calls(answer_dir)
    if config.dry_run:
        return _plan(config, prompts, answer_rows, cached, judgment_dir)
    secrets = _api_keys(config)
    if config.preflight:
        from ultrachat.evaluation.preflight import check_endpoints

        check_endpoints(config, secrets)
    calls: dict = {}
    stopped = [run_wave(_stage(config, "answers", secrets), "answers", answer_rows, cached, answer_dir, calls)]
    cached = cached_calls(answer_dir)
    texts = {what: cached[key]["text"] for what, key in answer_keys.items()
             if key in cached and cached[key]["status"] == "ok"}
    judgment_rows, judgment_keys = judgment_calls(config, prompts, texts)
    stopped.append(run_wave(_stage(config, "judgments", secrets), "judgments", judgment_rows,
                            cached_calls(judgment_dir), judgment_dir, calls))
    records = {**cached, **cached_calls(judgment_dir)}
    results = build_results(config, prompts, answer_keys, judgment_keys, records)
    results["calls"] = calls
    paths = write_outputs(config, results)
    counts = {**paths, "prompts": len(prompts), "calls": calls, "headline": _headline(results)}
    check_waves("evaluate", calls, stopped, config.failures, counts, f"the report {paths['report']} covers what "
                "finished", "results.json: candidates.*.error_examples, judge.error_examples")
    return counts


def _stage(config, wave: str, secrets: dict) -> PoolStage:
    from ultrachat.evaluation.worker import EvalHandlerFactory, EvaluationWorker, describe_calls

    actors = config.actors
    return PoolStage(
        worker=EvaluationWorker,
        handler_factory=EvalHandlerFactory(config.model_dump_json(include=set(EvaluateStage.model_fields))),
        key="key", schema=CALL_SCHEMA, unit=f"{wave} calls", pool=actors, batch_size=actors.calls_per_batch,
        batches_in_flight=actors.batches_in_flight, failures=config.failures, describe=describe_calls,
        dataset_name=dataset_name("evaluate", config.run_name, wave), run_name=config.run_name,
        run_label=run_label(config.run_name, "evaluate"), log_level=config.log_level, secrets=secrets)


def _api_keys(config) -> dict[str, str]:
    """Every endpoint's key, checked on the driver before any call; they reach the actors as secrets."""
    named = {f"candidates[{i}].chat": c.chat for i, c in enumerate(config.candidates)}
    named["judge.chat"] = config.judge.chat
    return driver_keys(named)


def _headline(results: dict) -> dict:
    head: dict = {}
    for name, pair in results.get("pairwise", {}).items():
        overall = pair["overall"]
        head[name] = {k: None if overall[k] is None else round(overall[k], 1)
                      for k in ("win", "tie", "lose", "win_rate")}
    for name, single in results.get("single", {}).items():
        mean = single["overall"]["mean"]
        head[f"score {name}"] = None if mean is None else round(mean, 2)
    head["judge_parsed"] = f"{results['judge']['parsed']}/{results['judge']['planned']}"
    return head


def _plan(config, prompts, answer_rows: list[dict], cached: dict, judgment_dir: str) -> dict:
    """dry_run: the calls and tokens each wave would make, after what the cache holds; no call is made."""
    from ultrachat.evaluation.calls import planned_judgments

    by_name = {c.name: c for c in config.candidates}
    todo = [r for r in answer_rows if r["key"] not in cached or cached[r["key"]]["status"].startswith("failed")]
    answers: dict = {}
    for row in todo:
        entry = answers.setdefault(row["endpoint"], {"calls": 0, "approx_prompt_tokens": 0, "max_completion_tokens": 0})
        entry["calls"] += 1
        entry["approx_prompt_tokens"] += estimate_prompt_tokens(json.loads(row["messages"]))
        entry["max_completion_tokens"] += by_name[row["endpoint"]].sampling.max_tokens
    planned = planned_judgments(config, len(prompts))
    done_judgments = len(cached_calls(judgment_dir))
    # Judge prompts hold the answers, unknown before they exist: bounded by the candidates' max_tokens.
    template = max(len(config.judge.pairwise_prompt), len(config.judge.single_prompt)) // 4
    longest = max(c.sampling.max_tokens for c in config.candidates)
    question = sum(len(p.question) for p in prompts) // 4 // max(1, len(prompts))
    plan = {"prompts": len(prompts), "candidates": [c.name for c in config.candidates],
            "answers": {"planned": len(answer_rows), "cached": len(answer_rows) - len(todo), "to_make": len(todo),
                        "per_candidate": answers},
            "judgments": {"planned": planned, "in_cache_now": done_judgments, "model": config.judge.chat.model,
                          "base_url": config.judge.chat.base_url,
                          "max_prompt_tokens": planned * (template + question + 2 * longest),
                          "max_completion_tokens": 2 * planned * config.judge.sampling.max_tokens,
                          "note": "upper bounds: judge prompts hold the answers; a reply without a verdict is "
                                  "asked once more (hence 2x completion tokens at most)"}}
    for name, chat in [(c.name, c.chat) for c in config.candidates] + [(JUDGE, config.judge.chat)]:
        if chat.requests_per_minute:
            calls = answers.get(name, {}).get("calls", 0) if name != JUDGE else planned
            plan.setdefault("minutes_at_rpm_limit", {})[name] = round(calls / chat.requests_per_minute, 1)
    logger.info("dry run: nothing called; the plan: %s", plan)
    return {"dry_run": True, "plan": plan}
