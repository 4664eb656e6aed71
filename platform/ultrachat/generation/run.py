"""The dialogue stage: a dialogue per opening line on an actor pool (stages/pool.py), resumable, loss-free.

1. Plan on the driver from ids only (generation/resume.py): every opening line gets exactly one id;
   ids already in the output are done; duplicates run once (from their first line).
2. Stream: read openings -> keep the planned lines -> ``map_batches(DialogueWorker)`` -> a shard per
   batch under ``dialogues/_parts``. A killed actor is restarted by Ray Data and its batches are redone;
   a killed driver is re-run with the same command and only the missing ids run.
3. Compact the shards into a few large ``data-*.parquet`` files with a manifest (compaction.py; a
   retried failure's old record goes then), summarize from the ``status``/``usage`` columns, and
   mirror new data files as JSONL.
"""

from __future__ import annotations

import logging
from collections import Counter

import ray

from ultrachat import storage
from ultrachat.compaction import FileTargets, compact, parts_dir, read_records, tidy
from ultrachat.config.generation import GenerateStage, OpeningsInput
from ultrachat.config.schema import GenerateConfig
from ultrachat.errors import InputError, PartialFailure
from ultrachat.generation.openings import read_openings
from ultrachat.generation.records import DIALOGUE_SCHEMA
from ultrachat.generation.resume import plan_dialogues
from ultrachat.generation.worker import DialogueHandlerFactory, DialogueWorker, describe_dialogues
from ultrachat.inputs import keep_rows
from ultrachat.jsonl_export import export_jsonl
from ultrachat.models.source import resolve_model
from ultrachat.observability import dataset_name, named, run_label
from ultrachat.shards import ShardSink
from ultrachat.stages.pool import PoolStage, check_failures, prior_counts, run_pool_stage

logger = logging.getLogger(__name__)

DIALOGUES_DIR = "dialogues"
JSONL_DIR = "dialogues_jsonl"


def run_dialogues(config: GenerateConfig, openings_config: OpeningsInput, secrets: dict[str, str]) -> dict:
    out_dir = storage.join(config.output_dir, DIALOGUES_DIR)
    resolved = {role: resolve_model(getattr(config, role).chat.model, key=f"{role}.chat.model")
                for role in ("user", "assistant") if getattr(config, role).chat.backend == "vllm"}
    # Named for the Ray Data view; the stages derived from it inherit the name unless renamed.
    openings = named(read_openings(openings_config), dataset_name("generate", config.run_name, "openings"))
    tidy(out_dir)  # a compaction killed after its commit: finish it before the plan reads the output
    plan = plan_dialogues(openings, out_dir, openings_config.limit, config.retry_failed)
    logger.info("plan: %s", plan.counts())
    if not plan.lines["valid_lines"] and not plan.lines["invalid_lines"]:
        raise InputError(f"openings.path: {openings_config.path} holds no opening lines. Fix: give "
                         f"JSONL/Parquet records with a 'text' field")
    stopped = None
    targets = FileTargets(config.output_files.rows_per_file, config.output_files.mb_per_file)
    if plan.todo.num_rows:
        # Only the planned lines reach the actors (a line is its source: file:line or file#row).
        wanted = [ray.put(plan.wanted_sources())]
        rows = openings.map_batches(keep_rows, fn_kwargs={"column": "source", "wanted": wanted},
                                    batch_format="pyarrow")
        try:
            run_pool_stage(_stage(config, resolved, secrets), rows, plan.todo.num_rows,
                           ShardSink(parts_dir(out_dir), DIALOGUE_SCHEMA), prior_counts(plan.prior, config.failures))
        except PartialFailure as err:
            stopped = err  # what finished is kept and summarized; the re-run retries the rest
        except Exception:
            _compact_what_finished(out_dir, targets)
            raise
    compacted = compact(out_dir, DIALOGUE_SCHEMA, targets)
    statuses, counts = _summarize(out_dir)
    counts.update({k: v for k, v in plan.counts().items() if k in ("invalid_lines", "duplicate_lines",
                                                                   "already_done", "retried_failed")})
    counts["replaced_failed_records"] = compacted["replaced_records"]
    counts["files"] = compacted["files"]
    counts["shards_compacted"] = compacted["parts"]
    if config.export_jsonl:
        counts["jsonl"] = export_jsonl(out_dir, storage.join(config.output_dir, JSONL_DIR))["path"]
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


def _compact_what_finished(out_dir: str, targets: FileTargets) -> None:
    """The stage failed: still leave the finished dialogues loadable (the re-run compacts anyway)."""
    try:
        compact(out_dir, DIALOGUE_SCHEMA, targets)
    except Exception:  # the stage's own error is the one to report
        logger.exception("could not compact the finished dialogues; a re-run will")


def _summarize(out_dir: str) -> tuple[Counter, dict]:
    """(full status -> count, the summary's counts)."""
    import pyarrow.compute as pc

    table = read_records(out_dir, ["status", "usage", "filter_reasons"], DIALOGUE_SCHEMA)
    statuses = Counter({row["values"]: row["counts"] for row in pc.value_counts(table["status"]).to_pylist()})
    kinds = Counter()
    for status, n in statuses.items():
        kinds[status.split(":", 1)[0]] += n

    def total(*fields: str) -> int:
        return sum(pc.sum(pc.struct_field(table["usage"], f)).as_py() or 0 for f in fields)

    # Every filter that acted, by reason: drops ("<reason>"), trims ("trimmed:<reason>"), rewrites.
    reasons = pc.value_counts(pc.list_flatten(table["filter_reasons"])).to_pylist()
    filters = {row["values"]: row["counts"] for row in sorted(reasons, key=lambda r: r["values"])}
    return statuses, {"dialogues": table.num_rows, **{f"status_{k}": v for k, v in sorted(kinds.items())},
                      "filters": filters,
                      "tokens_in": total("user_prompt_tokens", "assistant_prompt_tokens"),
                      "tokens_out": total("user_completion_tokens", "assistant_completion_tokens")}
