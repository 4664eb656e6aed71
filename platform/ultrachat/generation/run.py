"""The generate job: [construct opening lines ->] dialogues on a Ray Data actor pool, resumable, loss-free.

Construction lives in ultrachat/construction/ (its own stage, writing openings/); the dialogue stage:

1. Plan on the driver from ids only (never the data set): every opening line gets exactly one id;
   ids already in the output are done; duplicates run once (from their first line).
2. Stream: read openings -> ``map_batches(DialogueWorker, ActorPoolStrategy)`` -> DialogueSink.
   A killed actor is restarted by Ray Data and its batches are redone; a killed driver is re-run with
   the same command and only the missing ids run.
3. Summarize from the ``status``/``usage`` columns; export JSONL beside the Parquet shards.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections import Counter

import ray

from ultrachat import storage
from ultrachat.observability import actor_name, dataset_name, named, run_label
from ultrachat.inputs import source_order
from ultrachat.config.generation import OpeningsInput
from ultrachat.config.schema import GenerateConfig
from ultrachat.generation.openings import read_openings
from ultrachat.generation.progress import ProgressReporter, ProgressTracker
from ultrachat.generation.sink import DialogueSink, drop_superseded_failures, read_column
from ultrachat.generation.worker import DialogueWorker
from ultrachat.models.source import resolve_model
from ultrachat.errors import InputError

logger = logging.getLogger(__name__)

DIALOGUES_DIR = "dialogues"
JSONL_DIR = "dialogues_jsonl"


def run_generate(config: GenerateConfig) -> dict:
    """The stages ``config`` asks for: construct opening lines, then simulate dialogues from them."""
    stages = config.run_stages
    secrets = _api_keys(config, stages)
    if config.dry_run:
        return _dry_run(config, stages)
    counts: dict = {}
    if "construct" in stages:
        from ultrachat.construction.run import run_construction

        counts["construction"] = run_construction(config, secrets)
    if "dialogues" in stages:
        counts.update(run_dialogues(config, openings_input(config), secrets))
    return counts


def openings_input(config: GenerateConfig) -> OpeningsInput:
    """``openings`` as given, else the openings the construct stage wrote under output_dir."""
    if config.openings is not None:
        return config.openings
    from ultrachat.construction.run import OPENINGS_DIR, openings_complete

    built = storage.join(config.output_dir, OPENINGS_DIR)
    if not openings_complete(built):
        raise InputError(f"stages: the dialogues read the built openings in {built}, which are missing or "
                         f"incomplete (no _manifest.json). Fix: run the construct stage first (stages: "
                         f"[construct, dialogues]), or give openings.path")
    return OpeningsInput(path=built, format="parquet")


def run_dialogues(config: GenerateConfig, openings_config: OpeningsInput, secrets: dict[str, str]) -> dict:
    out_dir = storage.join(config.output_dir, DIALOGUES_DIR)
    resolved = {role: resolve_model(getattr(config, role).chat.model, key=f"{role}.chat.model")
                for role in ("user", "assistant") if getattr(config, role).chat.backend == "vllm"}
    # Named for the Ray Data view; the stages derived from it inherit the name unless renamed.
    openings = named(read_openings(openings_config), dataset_name("generate", config.run_name, "openings"))
    todo, plan = _plan(openings, out_dir, openings_config.limit, config.retry_failed)
    logger.info("plan: %s", {k: v for k, v in plan.items() if k != "retried_ids"})
    if plan["valid_lines"] == 0 and plan["invalid_lines"] == 0:
        raise InputError(f"openings.path: {openings_config.path} holds no opening lines. Fix: give "
                         f"JSONL/Parquet records with a 'text' field")
    if todo:
        _execute(config, openings, todo, resolved, secrets, out_dir)
    replaced = drop_superseded_failures(out_dir, plan.pop("retried_ids"))
    counts = _summarize(out_dir)
    counts.update({k: plan[k] for k in ("invalid_lines", "duplicate_lines", "already_done", "retried_failed")})
    counts["replaced_failed_records"] = replaced
    if config.export_jsonl:
        counts["jsonl"] = _export_jsonl(out_dir, storage.join(config.output_dir, JSONL_DIR),
                                        dataset_name("generate", config.run_name, "jsonl"))
    counts["dialogues_dir"] = out_dir
    return counts


def _dry_run(config: GenerateConfig, stages: list[str]) -> dict:
    from ultrachat.construction.plan import plan_construction, plan_dialogues

    result: dict = {"dry_run": True}
    if "construct" in stages:
        result["construction"] = plan_construction(config)
    if "dialogues" in stages:
        if "construct" in stages:
            per_sector = {k: s["openings_at_most"] for k, s in result["construction"]["sectors"].items()}
        else:
            source = openings_input(config)
            openings = read_openings(source)
            todo, _ = _plan(openings, storage.join(config.output_dir, DIALOGUES_DIR), source.limit,
                            config.retry_failed)
            sectors = {r["id"]: r["sector"] for r in openings.select_columns(["id", "sector"]).take_all()}
            per_sector = dict(Counter(sectors[i] for i in todo))
        result["dialogues"] = plan_dialogues(config, per_sector)
    return result


def _api_keys(config: GenerateConfig, stages: list[str]) -> dict[str, str]:
    """Fail before any work if an API key variable is unset; hand the keys to the actors."""
    roles = {}
    if "dialogues" in stages:
        roles.update(user=config.user.chat, assistant=config.assistant.chat)
    if "construct" in stages:
        roles["construction.llm"] = config.construction.llm.chat
    keys = {}
    for role, chat in roles.items():
        if chat.backend != "openai":
            continue
        value = os.environ.get(chat.api_key_env, "")
        if not value:
            raise ValueError(f"{role}.chat.api_key_env names ${chat.api_key_env}, which is not set. Fix: "
                             f"export {chat.api_key_env}=<your key> where the job's driver runs")
        keys[chat.api_key_env] = value
    return keys


def _plan(openings, out_dir: str, limit: int | None, retry_failed: bool) -> tuple[dict[str, str], dict]:
    """id -> the source line to run it from, for every id not yet in the output (or failed there)."""
    first: dict[str, tuple] = {}
    lines = Counter()
    for batch in openings.select_columns(["id", "source", "invalid"]).iter_batches(
            batch_size=65536, batch_format="pyarrow"):
        for id_, source, invalid in zip(*(batch.column(c).to_pylist() for c in ("id", "source", "invalid"))):
            lines["invalid_lines" if invalid else "valid_lines"] += 1
            if invalid and lines["invalid_lines"] <= 20:
                logger.warning("skipping opening line %s: %s", source, invalid)
            key = source_order(source)
            if id_ in first:
                lines["duplicate_lines"] += 1
                if key >= first[id_]:
                    continue
            first[id_] = key
    chosen = sorted(first.items(), key=lambda item: item[1])
    if limit is not None:
        chosen = chosen[:limit]
    existing = read_column(out_dir, ["id", "status"])
    done, failed = set(), set()
    for id_, status in zip(existing.column("id").to_pylist(), existing.column("status").to_pylist()):
        (failed if retry_failed and status.startswith("failed:") else done).add(id_)
    failed -= done
    todo = {id_: key[2] for id_, key in chosen if id_ not in done}
    retried = failed & set(todo)
    plan = {**{k: lines[k] for k in ("valid_lines", "invalid_lines", "duplicate_lines")},
            "planned": len(chosen), "already_done": len(chosen) - len(todo), "retried_failed": len(retried),
            "to_run": len(todo), "retried_ids": retried}
    return todo, plan


def _execute(config: GenerateConfig, openings, todo: dict, resolved: dict, secrets: dict, out_dir: str) -> None:
    pool = config.actors
    namespace = ray.get_runtime_context().namespace
    progress_name = actor_name("progress", config.run_name, uuid.uuid4().hex[:8])
    tracker = ProgressTracker.options(name=progress_name, namespace=namespace).remote()
    stage_json = config.model_dump_json(include=set(type(config).model_fields) - {"output_dir", "run_name",
                                                                                   "log_level", "ray"})
    # One batch per block: each finished batch becomes its own shard, so a kill loses at most the
    # batches in flight (an input file would otherwise be one block, written only at its very end).
    batches = openings.repartition(target_num_rows_per_block=pool.dialogues_per_batch)
    workers = batches.map_batches(
        DialogueWorker,
        # Async actor: several batches run at once on its event loop, sharing one engine; as many again
        # wait queued at the actor, so a finished batch is replaced at once, not after a scheduling round.
        compute=ray.data.ActorPoolStrategy(min_size=pool.min_actors, max_size=pool.max_actors,
                                           max_tasks_in_flight_per_actor=2 * pool.batches_in_flight,
                                           max_concurrent_calls_per_actor=pool.batches_in_flight),
        batch_size=pool.dialogues_per_batch,
        batch_format="pyarrow",
        num_cpus=pool.num_cpus,
        num_gpus=pool.num_gpus,
        fn_constructor_kwargs={"stage_json": stage_json, "resolved_models": resolved, "todo": [ray.put(todo)],
                               "progress_name": progress_name, "namespace": namespace, "secrets": secrets,
                               "log_level": config.log_level, "run": run_label(config.run_name, "generate")},
    )
    # The dashboard's Ray Data view lists it as ultrachat-generate-<run_name>_<uuid>, its operator as
    # MapBatches(DialogueWorker), the pool's actors as MapWorker(MapBatches(DialogueWorker)).
    named(workers, dataset_name("generate", config.run_name))
    logger.info("running %d dialogues on %d-%d actor(s) -> %s", len(todo), pool.min_actors, pool.max_actors, out_dir)
    try:
        with ProgressReporter(tracker, total=len(todo)):
            workers.write_datasink(DialogueSink(out_dir))
    finally:
        ray.kill(tracker)


def _summarize(out_dir: str) -> dict:
    table = read_column(out_dir, ["status", "usage"])
    statuses = Counter(s.split(":", 1)[0] for s in table.column("status").to_pylist())
    usage = Counter()
    for row in table.column("usage").to_pylist():
        usage.update(row)
    return {"dialogues": table.num_rows, **{f"status_{k}": v for k, v in sorted(statuses.items())},
            "tokens_in": usage["user_prompt_tokens"] + usage["assistant_prompt_tokens"],
            "tokens_out": usage["user_completion_tokens"] + usage["assistant_completion_tokens"]}


def _export_jsonl(out_dir: str, jsonl_dir: str, name: str) -> str:
    """All records as JSON lines (HF ``datasets`` / pandas ``read_json(lines=True)`` load it as is)."""
    filesystem, path = storage.filesystem_for(jsonl_dir)
    filesystem.delete_dir_contents(path, missing_dir_ok=True)  # rewritten whole: always matches the shards
    named(ray.data.read_parquet(out_dir), name).write_json(jsonl_dir)
    return jsonl_dir
