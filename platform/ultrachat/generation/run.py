"""The dialogue stage: a dialogue per opening line on an actor pool (stages/pool.py), resumable, loss-free.

1. Plan on the driver from ids only (never the data set): every opening line gets exactly one id;
   ids already in the output are done; duplicates run once (from their first line).
2. Stream: read openings -> keep the planned lines -> ``map_batches(DialogueWorker)`` -> a shard per
   batch. A killed actor is restarted by Ray Data and its batches are redone; a killed driver is re-run
   with the same command and only the missing ids run.
3. Summarize from the ``status``/``usage`` columns; export JSONL beside the Parquet shards.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import ray

from ultrachat import storage
from ultrachat.config.generation import GenerateStage, OpeningsInput
from ultrachat.config.schema import GenerateConfig
from ultrachat.errors import InputError, PartialFailure
from ultrachat.generation.openings import read_openings
from ultrachat.generation.records import DIALOGUE_SCHEMA
from ultrachat.generation.worker import DialogueHandlerFactory, DialogueWorker, describe_dialogues
from ultrachat.ids import source_order
from ultrachat.inputs import keep_rows
from ultrachat.models.source import resolve_model
from ultrachat.observability import dataset_name, named, run_label
from ultrachat.shards import ShardSink, drop_superseded_failures, read_column, shard_paths
from ultrachat.stages.pool import PoolStage, check_failures, prior_counts, run_pool_stage

logger = logging.getLogger(__name__)

DIALOGUES_DIR = "dialogues"
JSONL_DIR = "dialogues_jsonl"


@dataclass
class DialoguePlan:
    todo: dict[str, str]  # id -> the one source line to run it from
    retried: set[str]  # ids whose failed records a successful (or failed again) retry replaces
    lines: Counter = field(default_factory=Counter)  # valid_lines, invalid_lines, duplicate_lines
    planned: int = 0
    prior: Counter = field(default_factory=Counter)  # full status -> count of the planned ids already done

    def counts(self) -> dict:
        return {**{k: self.lines[k] for k in ("valid_lines", "invalid_lines", "duplicate_lines")},
                "planned": self.planned, "already_done": self.planned - len(self.todo),
                "retried_failed": len(self.retried), "to_run": len(self.todo)}


def run_dialogues(config: GenerateConfig, openings_config: OpeningsInput, secrets: dict[str, str]) -> dict:
    out_dir = storage.join(config.output_dir, DIALOGUES_DIR)
    resolved = {role: resolve_model(getattr(config, role).chat.model, key=f"{role}.chat.model")
                for role in ("user", "assistant") if getattr(config, role).chat.backend == "vllm"}
    # Named for the Ray Data view; the stages derived from it inherit the name unless renamed.
    openings = named(read_openings(openings_config), dataset_name("generate", config.run_name, "openings"))
    plan = plan_dialogues(openings, out_dir, openings_config.limit, config.retry_failed)
    logger.info("plan: %s", plan.counts())
    if not plan.lines["valid_lines"] and not plan.lines["invalid_lines"]:
        raise InputError(f"openings.path: {openings_config.path} holds no opening lines. Fix: give "
                         f"JSONL/Parquet records with a 'text' field")
    stopped = None
    if plan.todo:
        # Only the planned lines reach the actors (a line is its source: file:line or file#row).
        wanted = [ray.put(set(plan.todo.values()))]
        rows = openings.map_batches(keep_rows, fn_kwargs={"column": "source", "wanted": wanted},
                                    batch_format="pyarrow")
        try:
            run_pool_stage(_stage(config, resolved, secrets), rows, len(plan.todo),
                           ShardSink(out_dir, DIALOGUE_SCHEMA), prior_counts(plan.prior, config.failures))
        except PartialFailure as err:
            stopped = err  # what finished is kept and summarized; the re-run retries the rest
    replaced = drop_superseded_failures(out_dir, plan.retried, DIALOGUE_SCHEMA)
    statuses, counts = _summarize(out_dir)
    counts.update({k: v for k, v in plan.counts().items() if k in ("invalid_lines", "duplicate_lines",
                                                                   "already_done", "retried_failed")})
    counts["replaced_failed_records"] = replaced
    if config.export_jsonl:
        counts["jsonl"] = _export_jsonl(out_dir, storage.join(config.output_dir, JSONL_DIR),
                                        dataset_name("generate", config.run_name, "jsonl"))
    counts["dialogues_dir"] = out_dir
    if stopped is not None:
        raise PartialFailure(f"dialogues {stopped}", counts)
    invalid = sum(n for status, n in statuses.items() if status.startswith("invalid:"))
    check_failures(statuses, counts["dialogues"] - invalid, config.failures, "dialogues", out_dir, counts)
    return counts


def _stage(config: GenerateConfig, resolved: dict[str, str], secrets: dict[str, str]) -> PoolStage:
    # Only the stage's own settings travel to the actors (no job-level ones: output dir, Ray, lease).
    stage_json = config.model_dump_json(include=set(GenerateStage.model_fields))
    pool = config.actors
    return PoolStage(
        worker=DialogueWorker, handler_factory=DialogueHandlerFactory(stage_json, resolved), key="id",
        schema=DIALOGUE_SCHEMA, unit="dialogues", pool=pool, batch_size=pool.dialogues_per_batch,
        batches_in_flight=pool.batches_in_flight, failures=config.failures, describe=describe_dialogues,
        # The dashboard's Ray Data view lists it as ultrachat-generate-<run_name>_<uuid>, its operator as
        # MapBatches(DialogueWorker).
        dataset_name=dataset_name("generate", config.run_name), run_name=config.run_name,
        run_label=run_label(config.run_name, "generate"), log_level=config.log_level, secrets=secrets)


def plan_dialogues(openings, out_dir: str, limit: int | None, retry_failed: bool) -> DialoguePlan:
    """Every id not yet in the output (or failed there), with the source line to run it from."""
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
    existing = read_column(out_dir, ["id", "status"], DIALOGUE_SCHEMA)
    done, failed, kept_failures = set(), set(), {}
    for id_, status in zip(existing.column("id").to_pylist(), existing.column("status").to_pylist()):
        (failed if retry_failed and status.startswith("failed:") else done).add(id_)
        if status.startswith("failed:"):
            kept_failures[id_] = status  # not retried (retry_failed=false): still counts as failed
    failed -= done
    todo = {id_: key[2] for id_, key in chosen if id_ not in done}
    prior = Counter(kept_failures.get(id_, "done") for id_, _ in chosen if id_ in done)
    return DialoguePlan(todo=todo, retried=failed & set(todo), lines=lines, planned=len(chosen), prior=prior)


def _summarize(out_dir: str) -> tuple[Counter, dict]:
    """(full status -> count, the summary's counts)."""
    table = read_column(out_dir, ["status", "usage"], DIALOGUE_SCHEMA)
    statuses = Counter(table.column("status").to_pylist())
    kinds = Counter()
    for status, n in statuses.items():
        kinds[status.split(":", 1)[0]] += n
    usage = Counter()
    for row in table.column("usage").to_pylist():
        usage.update(row)
    return statuses, {"dialogues": table.num_rows, **{f"status_{k}": v for k, v in sorted(kinds.items())},
            "tokens_in": usage["user_prompt_tokens"] + usage["assistant_prompt_tokens"],
            "tokens_out": usage["user_completion_tokens"] + usage["assistant_completion_tokens"]}


def _export_jsonl(out_dir: str, jsonl_dir: str, name: str) -> str:
    """All records as JSON lines (HF ``datasets`` / pandas ``read_json(lines=True)`` load it as is)."""
    filesystem, path = storage.filesystem_for(jsonl_dir)
    filesystem.delete_dir_contents(path, missing_dir_ok=True)  # rewritten whole: always matches the shards
    if shard_paths(out_dir):  # none yet when failures stopped the very first batches
        named(ray.data.read_parquet(out_dir), name).write_json(jsonl_dir)
    return jsonl_dir
