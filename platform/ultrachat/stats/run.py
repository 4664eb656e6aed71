"""The stats job: the paper's dataset table (and its breakdowns) for any dialogue set, on Ray Data.

Pass 1 streams every dialogue through an actor pool (tokenizer, MTLD, duplicate keys); the driver
merges one small aggregate per batch and keeps the k smallest sample hashes. Then a Ray task computes
the duplicate shares from the keys the actors wrote; pass 2 reads the input again for the sampled
dialogues that are not embedded (or judged) yet. Outputs: stats.json, report.md, plots/.
"""

from __future__ import annotations

import contextlib
import logging
import math
import pickle
import time

from ultrachat import storage
from ultrachat.config.stats import OpenAIEmbedder
from ultrachat.errors import InputError, PartialFailure
from ultrachat.secret_env import SecretEnv
from ultrachat.stats import report
from ultrachat.stats.aggregate import Aggregate
from ultrachat.stats.dialogues import describe_files, input_files, read_dialogues
from ultrachat.stats.sample import (EMBEDDING_SCHEMA, JUDGE_SCHEMA, BottomK, EmbedWorker, cache_dir, judge_batch,
                                    read_cache, rows_with_keys, write_cache)

logger = logging.getLogger(__name__)

WORK_DIR = "work"
_PROGRESS_EVERY_S = 15.0


def run_stats(config) -> dict:
    from ultrachat.models.source import resolve_model
    from ultrachat.stats.topic import resolve_embedder

    files = input_files(config.input.path, config.input.format)
    logger.info("stats: reading %s from %s", describe_files(files), config.input.path)
    tokenizer_dir = None if config.dry_run else resolve_model(config.tokenizer, "tokenizer")
    embedder_dir = resolve_embedder(config.topic.embedding) if config.topic.enabled else None
    secrets = {} if config.dry_run else _api_keys(config)
    keys_dir = storage.join(config.output_dir, WORK_DIR, "duplicate-keys")
    if storage.exists(keys_dir):
        storage.remove_dir(keys_dir)  # keys of an earlier run: recomputed with this one's dialogues
    dataset = read_dialogues(files, readers=config.actors.max_actors)
    started, timings = time.monotonic(), {}
    lap = _stopwatch(timings)
    with _small_blocks():
        aggregate, samples = _measure(config, dataset, tokenizer_dir, keys_dir)
    lap("measure_s")
    overall = aggregate.groups.get("overall")
    if overall is None or overall.dialogues == 0:
        raise InputError(_nothing_measurable(config, aggregate))
    if config.dry_run:
        return _plan(config, aggregate, samples)
    duplicates = _duplicates(config, keys_dir)
    lap("duplicates_s")
    topic = _topic(config, dataset, samples.get("topic"), embedder_dir, secrets)
    lap("topic_s")
    coherence = _coherence(config, dataset, samples.get("judge"), secrets)
    stats = report.build_stats(config, aggregate, topic, coherence, duplicates, len(files))
    paths = report.write_outputs(config, stats)
    counts = {"dialogues": overall.dialogues, "rows": aggregate.rows, "problems": sum(aggregate.problems.values()),
              **paths, "overall": report.headline(stats),
              # Paid work this run did; a re-run on the same data reuses the cache and reports 0.
              "embedded_now": topic["embedded_now"] if topic else 0,
              "judged_now": coherence["judged_now"] if coherence else 0,
              "timings": {**timings, "total_s": round(time.monotonic() - started, 1)}}
    if coherence is not None and coherence["failed_fraction"] > config.judge.max_failed_fraction:
        raise PartialFailure(
            f"judge: {coherence['failed'] + coherence['unparseable']} of {coherence['planned']} verdicts failed or "
            f"had no 1-10 score (judge.max_failed_fraction={config.judge.max_failed_fraction}); errors: "
            f"{coherence['errors']} (e.g. {(coherence['error_examples'] or coherence['unparseable_examples'] or [''])[0]}). "
            f"Fix: check judge.chat ({config.judge.chat.base_url}, model "
            f"{config.judge.chat.model}) and the rubric's `Score: N` instruction, then re-run: scores so far are "
            f"cached. The other figures are in {paths['report']}", counts)
    return counts


def _stopwatch(timings: dict[str, float]):
    """``lap(name)`` records the seconds since the previous lap (or since the stopwatch was made)."""
    last = [time.monotonic()]

    def lap(name: str) -> None:
        now = time.monotonic()
        timings[name], last[0] = round(now - last[0], 1), now

    return lap


def _api_keys(config) -> dict[str, str]:
    """Fail before any work if a named API key variable is unset; the keys go to the workers that call
    the endpoints (they need not share the driver's environment), never into a config or log."""
    import os

    named = {}
    if config.judge is not None and config.judge.chat.api_key_env is not None:
        named["judge.chat.api_key_env"] = (config.judge.chat.api_key_env, config.judge.chat.base_url)
    if config.topic.enabled and isinstance(config.topic.embedding, OpenAIEmbedder):
        named["topic.embedding.api_key_env"] = (config.topic.embedding.api_key_env, config.topic.embedding.base_url)
    keys = {}
    for key, (variable, url) in named.items():
        value = os.environ.get(variable, "").strip()
        if not value:
            raise InputError(f"{key}: environment variable {variable} is unset or empty. Fix: export {variable}="
                             f"<the key for {url}> where the job's driver runs (any value for a local server)")
        keys[variable] = value
    return keys


@contextlib.contextmanager
def _small_blocks(max_bytes: int = 4 << 20):
    """A read task streams a whole file; with Ray Data's default 128 MiB blocks the actors would wait
    for most of it before their first batch. Small blocks keep reading and measuring overlapped."""
    from ray.data import DataContext

    context = DataContext.get_current()
    saved, context.target_max_block_size = context.target_max_block_size, max_bytes
    try:
        yield
    finally:
        context.target_max_block_size = saved


def _measure(config, dataset, tokenizer_dir: str | None, keys_dir: str) -> tuple[Aggregate, dict]:
    import ray

    from ultrachat.stats.measure import DialogueMeter

    dedup = config.near_duplicates
    minhash = None if config.dry_run or not dedup.enabled else {
        "num_perm": dedup.num_perm, "bands": dedup.bands, "shingle_words": dedup.shingle_words}
    actors = config.actors
    # The seeded samples this run takes: name -> (seed, size).
    sampled = {**({"topic": (config.topic.seed, config.topic.sample_size)} if config.topic.enabled else {}),
               **({"judge": (config.judge.seed, config.judge.sample_size)} if config.judge else {})}
    measured = dataset.map_batches(
        DialogueMeter, batch_format="pyarrow", batch_size=actors.dialogues_per_batch,
        compute=ray.data.ActorPoolStrategy(min_size=actors.min_actors, max_size=actors.max_actors),
        num_cpus=actors.num_cpus, num_gpus=actors.num_gpus,
        fn_constructor_kwargs={"tokenizer_path": tokenizer_dir, "threshold": config.mtld.threshold,
                               "overall_statuses": config.input.overall_statuses, "keys_dir": keys_dir,
                               "sample_seeds": {name: seed for name, (seed, _) in sampled.items()}, "minhash": minhash})
    aggregate = Aggregate()
    samples = {name: BottomK(size) for name, (_, size) in sampled.items()}
    started = last = time.monotonic()
    for row in measured.iter_rows():
        result = pickle.loads(row["result"])
        aggregate.merge(result["aggregate"])
        for name, (hashes, keys, chars) in result["candidates"].items():
            samples[name].add(hashes, keys, chars)
        if time.monotonic() - last >= _PROGRESS_EVERY_S:
            last = time.monotonic()
            logger.info("stats: %d dialogues measured (%.0f/s), %d not measurable", aggregate.rows,
                        aggregate.rows / (last - started), sum(aggregate.problems.values()))
    elapsed = time.monotonic() - started
    logger.info("stats: measured %d dialogues in %.0f s (%.0f/s)", aggregate.rows, elapsed,
                aggregate.rows / max(elapsed, 1e-9))
    return aggregate, samples


def _nothing_measurable(config, aggregate: Aggregate) -> str:
    if not aggregate.rows:
        return f"input.path: {config.input.path} holds no dialogue records. Fix: point it to dialogues"
    shown = "; ".join(f"{label}: {count} (e.g. {aggregate.problem_examples[label][0]})"
                      for label, count in aggregate.problems.most_common(3))
    statuses = {k[len('status:'):]: g.dialogues for k, g in aggregate.groups.items() if k.startswith("status:")}
    hint = (f" Rows by status: {statuses}; input.overall_statuses={config.input.overall_statuses} selects none."
            if statuses else "")
    return (f"input.path: none of the {aggregate.rows} records in {config.input.path} is a measurable dialogue. "
            f"{shown or 'No problems found'}.{hint} Fix: give user/assistant message lists (see the problems)")


def _duplicates(config, keys_dir: str) -> dict | None:
    if not config.near_duplicates.enabled:
        return None
    import ray

    from ultrachat.stats.measure import duplicate_shares

    return ray.get(ray.remote(num_cpus=1)(duplicate_shares).remote(keys_dir))


def _topic(config, dataset, sample: BottomK | None, model_dir: str | None, secrets: dict) -> dict | None:
    import numpy as np
    import ray

    from ultrachat.stats.topic import embedder_id, similarity_stats

    topic = config.topic
    if not topic.enabled:
        return None
    keys, _ = sample.sample()
    directory = cache_dir(config.output_dir, "embeddings", embedder_id(topic.embedding))
    cached = read_cache(directory, EMBEDDING_SCHEMA)
    missing = set(keys) - set(cached)
    logger.info("topic: %d sampled dialogues, %d embedded already (cache), %d to embed with %s", len(keys),
                len(set(keys)) - len(missing), len(missing), topic.embedding.model)
    if missing:
        actors = config.actors
        remote = isinstance(topic.embedding, OpenAIEmbedder)
        found = rows_with_keys(dataset, missing).map_batches(
            EmbedWorker, batch_format="pyarrow", batch_size=topic.embedding.batch_size * 4,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors.max_actors),
            num_cpus=0 if remote else actors.num_cpus, num_gpus=0 if remote else topic.embedding.num_gpus,
            fn_constructor_kwargs={"config": topic.embedding, "model_dir": model_dir, "secrets": SecretEnv(secrets)})
        new = found.take_all()
        write_cache(directory, new, EMBEDDING_SCHEMA)
        cached.update({row["key"]: row for row in new})
    vectors = np.array([cached[k]["embedding"] for k in keys if k in cached], dtype=np.float32)
    stats = similarity_stats(vectors, topic.histogram_pairs, topic.seed)
    return {**stats, "seed": topic.seed, "model": topic.embedding.model, "backend": topic.embedding.backend,
            "sample_size": topic.sample_size, "embedded_now": len(missing), "cache": directory}


def _coherence(config, dataset, sample: BottomK | None, secrets: dict) -> dict | None:
    import ray

    from ultrachat.stats.judge import judge_id

    judge = config.judge
    if judge is None:
        return None
    keys, _ = sample.sample()
    directory = cache_dir(config.output_dir, "judge", judge_id(judge))
    cached = read_cache(directory, JUDGE_SCHEMA)
    missing = set(keys) - set(cached)
    logger.info("coherence: %d sampled dialogues, %d judged already (cache), %d to judge with %s at %s", len(keys),
                len(set(keys)) - len(missing), len(missing), judge.chat.model, judge.chat.base_url)
    failed: dict[str, dict] = {}
    if missing:
        verdicts = rows_with_keys(dataset, missing).map_batches(
            judge_batch, batch_format="pyarrow", batch_size=max(16, judge.chat.max_concurrency), num_cpus=0,
            compute=ray.data.TaskPoolStrategy(size=1), fn_kwargs={"config": judge, "secrets": SecretEnv(secrets)}).take_all()
        # A garbage verdict is the judge's answer (cached); a failed call is retried by the next run.
        write_cache(directory, [v for v in verdicts if not v["error"] or v["error"] == "unparseable"], JUDGE_SCHEMA)
        for verdict in verdicts:
            (failed if verdict["error"] and verdict["error"] != "unparseable" else cached)[verdict["key"]] = verdict
    judged = [cached[k] for k in keys if k in cached]
    scores = [v["score"] for v in judged if v["score"] is not None]
    errors: dict[str, int] = {}
    for verdict in failed.values():
        kind = verdict["error"].split(": ")[0]
        errors[kind] = errors.get(kind, 0) + 1
    unparseable = [v for v in judged if v["score"] is None]
    failed_calls = sum(1 for k in keys if k in failed)
    mean = sum(scores) / len(scores) if scores else None
    sd = (sum((s - mean) ** 2 for s in scores) / (len(scores) - 1)) ** 0.5 if len(scores) > 1 else None
    return {"mean": None if mean is None else round(mean, 3),
            "se": None if sd is None else round(sd / math.sqrt(len(scores)), 3), "n": len(scores),
            "planned": len(keys), "unparseable": len(unparseable), "failed": failed_calls,
            "failed_fraction": (len(unparseable) + failed_calls) / max(1, len(keys)), "errors": errors,
            "unparseable_examples": [v["verdict"][:200] for v in unparseable[:3]],
            "error_examples": [v["error"][:300] for v in list(failed.values())[:3]],
            "histogram": {int(s): scores.count(s) for s in sorted(set(scores)) if float(s).is_integer()},
            "seed": judge.seed, "model": judge.chat.model, "base_url": judge.chat.base_url,
            "sample_size": judge.sample_size, "judged_now": len(missing), "cache": directory}


def _plan(config, aggregate: Aggregate, samples: dict) -> dict:
    """dry_run: what the embedder and the judge would be asked, from the same samples a real run takes."""
    from ultrachat.stats.judge import judge_id, planned_tokens
    from ultrachat.stats.topic import embedder_id

    plan: dict = {"dialogues": aggregate.groups["overall"].dialogues, "rows": aggregate.rows,
                  "problems": dict(aggregate.problems)}
    if config.topic.enabled:
        keys, chars = samples["topic"].sample()
        cached = read_cache(cache_dir(config.output_dir, "embeddings", embedder_id(config.topic.embedding)),
                            EMBEDDING_SCHEMA)
        todo = list({k: c for k, c in zip(keys, chars) if k not in cached}.values())
        plan["embedding"] = {"model": config.topic.embedding.model, "sampled": len(keys), "cached": len(set(keys)) - len(todo),
                             "to_embed": len(todo), "approx_tokens": int(sum(todo) // 4)}
    if config.judge is not None:
        judge = config.judge
        keys, chars = samples["judge"].sample()
        cached = read_cache(cache_dir(config.output_dir, "judge", judge_id(judge)), JUDGE_SCHEMA)
        todo = list({k: c for k, c in zip(keys, chars) if k not in cached}.values())
        prompt = sum(planned_tokens(judge, c) for c in todo)
        plan["judge"] = {"model": judge.chat.model, "base_url": judge.chat.base_url, "sampled": len(keys),
                         "cached": len(set(keys)) - len(todo), "calls": len(todo), "approx_prompt_tokens": prompt,
                         "max_completion_tokens": len(todo) * judge.sampling.max_tokens}
        if judge.chat.requests_per_minute:
            plan["judge"]["minutes_at_rpm_limit"] = round(len(todo) / judge.chat.requests_per_minute, 1)
    logger.info("dry run: nothing embedded or judged; the plan: %s", plan)
    return {"dry_run": True, "plan": plan}
