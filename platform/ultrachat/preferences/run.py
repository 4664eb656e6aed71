"""The preferences job: prompts -> N completions each from a model pool -> aspect ratings by a judge ->
one (chosen, rejected) pair per prompt, in the ``ultrafeedback_binarized`` layout.

Two waves of cached calls on a Ray Data actor pool (stages/call_waves.py): every completion not yet in
``cache/completions``, then every rating not yet in ``cache/ratings``. A killed run loses only the
batches in flight; its re-run makes no call twice and retries the failed ones. The outputs are
rebuilt from the cache on every run, so they always match it:

- ``pairs/data.parquet``: prompt, prompt_id, chosen, rejected (messages lists), messages (= chosen),
  score_chosen, score_rejected, and which model and principle made each side;
- ``completions/data.parquet``: every completion with its status, ratings (aspect, rating, rationale),
  mean score and rating status, so nothing asked for is dropped silently.
"""

from __future__ import annotations

import json
import logging
from collections import Counter

import pyarrow as pa

from ultrachat import storage
from ultrachat.config.preferences import JUDGE, PreferencesStage
from ultrachat.models.source import resolve_model
from ultrachat.observability import dataset_name, run_label
from ultrachat.preferences.binarize import binarize
from ultrachat.preferences.calls import completion_calls, rating_calls
from ultrachat.preferences.prompts import load_prompts
from ultrachat.preferences.ratings import mean_rating
from ultrachat.secret_env import driver_keys
from ultrachat.shards import write_atomic
from ultrachat.stages.call_waves import CALL_SCHEMA, cached_calls, check_waves, run_wave
from ultrachat.stages.pool import PoolStage

logger = logging.getLogger(__name__)

CACHE_DIR = "cache"
PAIRS_DIR, COMPLETIONS_DIR = "pairs", "completions"  # each holds one data.parquet
MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
PAIR_SCHEMA = pa.schema([
    ("prompt", pa.string()), ("prompt_id", pa.string()), ("chosen", MESSAGES), ("rejected", MESSAGES),
    ("messages", MESSAGES), ("score_chosen", pa.float64()), ("score_rejected", pa.float64()),
    ("chosen_model", pa.string()), ("rejected_model", pa.string()), ("chosen_principle", pa.string()),
    ("rejected_principle", pa.string()),
])
COMPLETION_SCHEMA = pa.schema([
    ("prompt_id", pa.string()), ("prompt", pa.string()), ("context", MESSAGES), ("slot", pa.int64()),
    ("model", pa.string()), ("principle", pa.string()), ("status", pa.string()), ("text", pa.string()),
    ("rating_status", pa.string()), ("score", pa.float64()),
    ("ratings", pa.list_(pa.struct([("aspect", pa.string()), ("rating", pa.int64()), ("rationale", pa.string())]))),
])


def run_preferences(config) -> dict:
    prompts, prompt_counts = load_prompts(config.prompts)
    completion_dir, rating_dir = (storage.join(config.output_dir, CACHE_DIR, k) for k in ("completions", "ratings"))
    completion_rows, slots = completion_calls(config, prompts)
    if config.dry_run:
        return _plan(config, prompts, completion_rows, completion_dir, prompt_counts)
    secrets = driver_keys({**{f"models[{i}].chat": m.chat for i, m in enumerate(config.models)},
                           "judge.chat": config.judge.chat})
    resolved = {m.name: resolve_model(m.chat.model, key=f"models[{i}].chat.model")
                for i, m in enumerate(config.models) if m.chat.backend == "vllm"}
    if config.judge.chat.backend == "vllm":
        resolved[JUDGE] = resolve_model(config.judge.chat.model, key="judge.chat.model")
    calls: dict = {}
    stopped = [run_wave(_stage(config, "completions", secrets, resolved), "completions", completion_rows,
                        cached_calls(completion_dir), completion_dir, calls)]
    completions = cached_calls(completion_dir)
    texts = {where: completions[key]["text"] for where, (key, _, _) in slots.items()
             if key in completions and completions[key]["status"] == "ok" and completions[key]["text"].strip()}
    rating_rows, rating_keys = rating_calls(config, prompts, texts)
    stopped.append(run_wave(_stage(config, "ratings", secrets, resolved), "ratings", rating_rows,
                            cached_calls(rating_dir), rating_dir, calls))
    ratings = cached_calls(rating_dir)
    pairs, records, outcomes = _assemble(config, prompts, slots, completions, rating_keys, ratings)
    paths = _write(config, pairs, records)
    counts = {**paths, **prompt_counts, "calls": calls, "pairs": len(pairs), "binarize": dict(outcomes)}
    check_waves("preferences", calls, stopped, config.failures, counts,
                f"{paths['pairs_file']} holds the pairs of what finished",
                f"{paths['completions_file']}: status and rating_status")
    if not pairs:
        logger.warning("preferences: no pair came out of %d prompts (%s)", len(prompts), dict(outcomes))
    return counts


def _assemble(config: PreferencesStage, prompts, slots: dict, completions: dict, rating_keys: dict,
              ratings: dict) -> tuple[list[dict], list[dict], Counter]:
    pairs, records, outcomes = [], [], Counter()
    for prompt in prompts:
        rated = []
        for slot in range(config.completions_per_prompt):
            key, model, principle = slots[(prompt.id, slot)]
            call = completions.get(key)
            status = "missing" if call is None else call["status"]
            text = call["text"] if call else ""
            if status == "ok" and not text.strip():
                status = "empty"
            rating_call = ratings.get(rating_keys.get((prompt.id, slot), ""))
            rating_status = "not_rated" if rating_call is None else rating_call["status"]
            parsed = json.loads(rating_call["verdict"]) if rating_call and rating_status == "ok" else None
            records.append({
                "prompt_id": prompt.id, "prompt": prompt.text, "context": list(prompt.messages), "slot": slot,
                "model": model, "principle": principle, "status": status, "text": text,
                "rating_status": rating_status, "score": mean_rating(parsed) if parsed else None,
                "ratings": [{"aspect": a, **r} for a, r in parsed.items()] if parsed else None})
            rated.append({"text": text, "ratings": parsed, "model": model, "principle": principle})
        pair, reason = binarize(prompt, rated, config.binarize.seed)
        outcomes["pair" if pair else reason] += 1
        if pair:
            pairs.append(pair)
    return pairs, records, outcomes


def _write(config: PreferencesStage, pairs: list[dict], records: list[dict]) -> dict:
    out = {}
    for name, rows, schema in ((PAIRS_DIR, pairs, PAIR_SCHEMA), (COMPLETIONS_DIR, records, COMPLETION_SCHEMA)):
        path = storage.join(config.output_dir, name, "data.parquet")
        filesystem, inner = storage.filesystem_for(path)
        filesystem.create_dir(inner.rsplit("/", 1)[0], recursive=True)
        table = pa.Table.from_pylist(rows, schema=schema)
        if not _same_as_written(filesystem, inner, table):  # unchanged files keep the train job's fingerprint
            write_atomic(filesystem, inner, table)
        out[f"{name}_file"] = path
    return out


def _same_as_written(filesystem, inner: str, table: pa.Table) -> bool:
    import pyarrow.parquet as pq
    from pyarrow import fs

    if filesystem.get_file_info(inner).type != fs.FileType.File:
        return False
    return pq.read_table(inner, filesystem=filesystem).equals(table)


def _stage(config, wave: str, secrets: dict, resolved: dict) -> PoolStage:
    from ultrachat.evaluation.worker import describe_calls
    from ultrachat.preferences.worker import PreferenceHandlerFactory, PreferenceWorker

    actors = config.actors
    return PoolStage(
        worker=PreferenceWorker,
        handler_factory=PreferenceHandlerFactory(config.model_dump_json(include=set(PreferencesStage.model_fields)),
                                                 resolved),
        key="key", schema=CALL_SCHEMA, unit=f"{wave} calls", pool=actors, batch_size=actors.calls_per_batch,
        batches_in_flight=actors.batches_in_flight, failures=config.failures, describe=describe_calls,
        dataset_name=dataset_name("preferences", config.run_name, wave), run_name=config.run_name,
        run_label=run_label(config.run_name, "preferences"), log_level=config.log_level, secrets=secrets)


def _plan(config, prompts, completion_rows: list[dict], completion_dir: str, prompt_counts: Counter) -> dict:
    """dry_run: the calls each wave would make and their token bounds; nothing is called."""
    from ultrachat.llm.openai_backend import estimate_prompt_tokens

    cached = cached_calls(completion_dir)
    todo = [r for r in completion_rows if r["key"] not in cached or cached[r["key"]]["status"].startswith("failed")]
    by_model = {m.name: m for m in config.models}
    per_model: dict = {}
    for row in todo:
        entry = per_model.setdefault(row["endpoint"], {"calls": 0, "approx_prompt_tokens": 0, "max_completion_tokens": 0})
        entry["calls"] += 1
        entry["approx_prompt_tokens"] += estimate_prompt_tokens(json.loads(row["messages"]))
        entry["max_completion_tokens"] += by_model[row["endpoint"]].sampling.max_tokens
    ratings = len(completion_rows)
    longest = max(m.sampling.max_tokens for m in config.models)
    plan = {"prompts": len(prompts), "prompt_counts": dict(prompt_counts),
            "completions": {"planned": len(completion_rows), "cached": len(completion_rows) - len(todo),
                            "to_make": len(todo), "per_model": per_model},
            "ratings": {"planned_at_most": ratings, "model": config.judge.chat.model,
                        "max_prompt_tokens": ratings * (len(config.judge.prompt) // 4 + 200 + longest),
                        "max_completion_tokens": 2 * ratings * config.judge.sampling.max_tokens,
                        "note": "upper bounds: a rating prompt holds the completion; an unparseable reply is "
                                "asked once more (hence 2x completion tokens at most)"}}
    logger.info("dry run: nothing called; the plan: %s", plan)
    return {"dry_run": True, "plan": plan}
