"""The construct stage: UltraChat opening lines built by LLM calls on Ray Data actor pools, resumable.

1. Inputs on the driver: the reference lists, the entities, the C4-style pieces (classified by URL,
   truncated, sampled evenly across material types). Bad records are counted with file:line.
2. Three waves of LLM calls (construction/calls.py). Each wave is one Ray Data run: its calls are
   derived from the previous waves' results on storage -> the calls already made are dropped ->
   ``map_batches(ConstructionWorker)`` (stages/pool.py) -> one Parquet shard per batch under
   ``construction/calls/<stage>/``. A re-run makes only the calls missing there (and failed ones).
3. Candidates (construction/candidates.py) -> exact and near de-duplication -> even sampling to each
   sector's target on the driver, from compact key columns -> ``openings/`` (Parquet, the format
   ``openings.path`` reads) with a ``_manifest.json`` written last, marking it complete.
"""

from __future__ import annotations

import json
import logging
from collections import Counter

import numpy as np
import ray

from ultrachat import storage
from ultrachat.observability import dataset_name, named, run_label
from ultrachat.construction.calls import PARENT, WAVES, CallPlanner
from ultrachat.construction.candidates import OPENING_STAGES, CandidateBuilder
from ultrachat.construction.dedup import dedup_mask
from ultrachat.construction.records import CANDIDATE_SCHEMA, OPENING_LINE_SCHEMA, RESULT_SCHEMA
from ultrachat.construction.sampling import sample_evenly
from ultrachat.construction.sources import ConstructionInputs, load_inputs
from ultrachat.construction.worker import CallHandlerFactory, ConstructionWorker
from ultrachat.errors import PartialFailure
from ultrachat.inputs import keep_rows
from ultrachat.shards import ShardSink, drop_superseded_failures, read_column, shard_paths
from ultrachat.stages.pool import PoolStage, check_failures, prior_counts, run_pool_stage

logger = logging.getLogger(__name__)

CALLS_DIR, CANDIDATES_DIR, OPENINGS_DIR, MANIFEST = "construction/calls", "construction/candidates", "openings", \
    "_manifest.json"


def run_construction(config, secrets: dict[str, str]) -> dict:
    """Build the opening lines of ``config`` (a GenerateConfig); returns the counts of every step."""
    c = config.construction
    planner = CallPlanner(c)
    source = load_inputs(config)
    calls_root = storage.join(config.output_dir, CALLS_DIR)
    stages: dict[str, dict] = {}
    for wave in WAVES:
        stages.update(_run_wave(config, planner, source, wave, calls_root, secrets))
    candidates_dir = storage.join(config.output_dir, CANDIDATES_DIR)
    made = _write_candidates(config, source.templates, calls_root, candidates_dir)
    selection = _select(config, candidates_dir)
    openings_dir = storage.join(config.output_dir, OPENINGS_DIR)
    _write_openings(candidates_dir, openings_dir, selection.pop("chosen_keys"), selection,
                    dataset_name("construct", config.run_name, "openings"))
    return {"inputs": source.stats, "stages": stages, "candidates": made, **selection, "openings_dir": openings_dir}


def stage_dir(calls_root: str, stage: str) -> str:
    return storage.join(calls_root, stage)


def stored_status(calls_root: str, stage: str) -> dict[str, str]:
    """call id -> its best stored status ("ok" wins over a failure recorded by an earlier run)."""
    table = read_column(stage_dir(calls_root, stage), ["call_id", "status"], RESULT_SCHEMA)
    out: dict[str, str] = {}
    for call_id, status in zip(table.column("call_id").to_pylist(), table.column("status").to_pylist()):
        if out.get(call_id) != "ok":
            out[call_id] = status
    return out


def wave_calls(planner: CallPlanner, source: ConstructionInputs, wave: tuple[str, ...], calls_root: str):
    """A Ray Dataset of every call of ``wave`` (made or not), or None when the wave has none."""
    parts = []
    if wave == WAVES[0]:
        roots = [call for topic in source.meta_topics for call in planner.meta_topic_calls(topic)]
        roots += [call for entity in source.entities for call in planner.entity_calls(entity)]
        roots += [call for mtype in source.material_types for call in planner.material_type_calls(mtype)]
        if roots:
            parts.append(ray.data.from_items(roots))
        if source.materials is not None:
            parts.append(source.materials.flat_map(planner.material_calls))
    else:
        for parent in sorted({PARENT[s] for s in wave if planner.items_per_parent(s)}):
            if shard_paths(stage_dir(calls_root, parent)):
                parts.append(ray.data.read_parquet(stage_dir(calls_root, parent), schema=RESULT_SCHEMA,
                                                   file_extensions=["parquet"]).flat_map(planner.child_calls))
    if not parts:
        return None
    return parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]


def _run_wave(config, planner: CallPlanner, source, wave, calls_root: str, secrets) -> dict[str, dict]:
    c = config.construction
    calls = wave_calls(planner, source, wave, calls_root)
    if calls is None:
        return {}
    name = dataset_name("construct", config.run_name, f"wave{WAVES.index(wave) + 1}")
    calls = named(calls, f"{name}-plan").materialize()  # derived once: counted here, then fed to the actors
    planned = Counter()
    ids_by_stage: dict[str, list[str]] = {}
    for batch in calls.select_columns(["call_id", "stage"]).iter_batches(batch_size=65536, batch_format="pyarrow"):
        for call_id, stage in zip(batch.column("call_id").to_pylist(), batch.column("stage").to_pylist()):
            ids_by_stage.setdefault(stage, []).append(call_id)
    todo, retried, stale, report, prior = set(), {}, {}, {}, Counter()
    for stage, ids in sorted(ids_by_stage.items()):
        status = stored_status(calls_root, stage)
        done = {i for i, s in status.items() if s == "ok" or not c.retry_failed}
        missing = {i for i in ids if i not in done}
        prior.update(status[i] for i in set(ids) - missing)
        todo |= missing
        retried[stage] = {i for i in missing if i in status}
        # Failed rows an earlier run left beside a later success (killed before its clean-up) go too.
        stale[stage] = retried[stage] | {i for i in ids if status.get(i) == "ok"}
        planned[stage] = len(ids)
        report[stage] = {"calls": len(set(ids)), "already_done": len(set(ids)) - len(missing),
                         "retried_failed": len(retried[stage]), "to_run": len(missing)}
    logger.info("wave %s: %s", "+".join(wave), report)
    stopped = None
    if todo:
        # Only the calls still to make reach the actors.
        rows = calls.map_batches(keep_rows, fn_kwargs={"column": "call_id", "wanted": [ray.put(todo)]},
                                 batch_format="pyarrow")
        try:
            run_pool_stage(_stage(config, source.resolved_model, secrets, name), rows, len(todo),
                           ShardSink(calls_root, RESULT_SCHEMA, key="call_id", partition_by="stage"),
                           prior_counts(prior, config.failures))
        except PartialFailure as err:
            stopped = err
    statuses = {}
    for stage in report:
        drop_superseded_failures(stage_dir(calls_root, stage), stale[stage], RESULT_SCHEMA, key="call_id")
        statuses[stage], outcome = _stage_outcome(calls_root, stage)
        report[stage].update(outcome)
    if stopped is not None:
        raise PartialFailure(f"construction wave {'+'.join(wave)} {stopped}", {"stages": report})
    for stage, counts in statuses.items():
        check_failures(counts, sum(counts.values()), config.failures, "LLM calls", stage_dir(calls_root, stage),
                       {"stages": report})
    return report


def _stage(config, resolved: str | None, secrets: dict, name: str) -> PoolStage:
    pool = config.construction.actors
    return PoolStage(
        worker=ConstructionWorker, handler_factory=CallHandlerFactory(config.construction.model_dump_json(), resolved),
        key="call_id", schema=RESULT_SCHEMA, unit="LLM calls", pool=pool, batch_size=pool.calls_per_batch,
        batches_in_flight=pool.batches_in_flight, failures=config.failures, describe=_describe_calls,
        # Ray Data view: ultrachat-construct-<run_name>-wave<N>, MapBatches(ConstructionWorker)
        dataset_name=name, run_name=config.run_name, run_label=run_label(config.run_name, "generate"),
        log_level=config.log_level, secrets=secrets)


def _describe_calls(c: Counter, total: int, elapsed: float) -> str:
    return (f"LLM calls {c['done']}/{total} (ok {c['ok']}, failed {c['failed']}) | items {c['items']} | "
            f"tokens in {c['tokens_in']} out {c['tokens_out']} | {c['done'] / elapsed:.2f} calls/s")


def _stage_outcome(calls_root: str, stage: str) -> tuple[Counter, dict]:
    """(status -> count, the report's counts) of a stage's stored results."""
    table = read_column(stage_dir(calls_root, stage), ["status", "items", "want"], RESULT_SCHEMA)
    statuses = Counter(table.column("status").to_pylist())
    items = [len(i) for i in table.column("items").to_pylist()]
    short = sum(1 for n, want in zip(items, table.column("want").to_pylist()) if 0 < n < want)
    out = {"ok": statuses["ok"], "items": sum(items), "short_lists": short}
    out.update({k.replace(":", "_"): v for k, v in sorted(statuses.items()) if k != "ok"})
    return statuses, out


def _write_candidates(config, templates: dict[str, str], calls_root: str, candidates_dir: str) -> dict:
    c = config.construction
    refined = stored_status(calls_root, "refined_instructions") if c.II else {}
    builder = CandidateBuilder(c, templates, {i for i, s in refined.items() if s == "ok"})
    parts = [ray.data.read_parquet(stage_dir(calls_root, s), schema=RESULT_SCHEMA, file_extensions=["parquet"])
             .flat_map(builder) for s in OPENING_STAGES
             if shard_paths(stage_dir(calls_root, s))]
    filesystem, path = storage.filesystem_for(candidates_dir)
    filesystem.delete_dir_contents(path, missing_dir_ok=True)  # derived from the results: rebuilt whole
    if parts:
        named(parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0],
              dataset_name("construct", config.run_name, "candidates")).write_datasink(
            ShardSink(candidates_dir, CANDIDATE_SCHEMA, key="key"))
    table = read_column(candidates_dir, ["sector"], CANDIDATE_SCHEMA)
    return {f"sector_{k}": v for k, v in sorted(Counter(table.column("sector").to_pylist()).items())}


def _select(config, candidates_dir: str) -> dict:
    """De-duplicate, then sample each sector evenly to its target; returns counts and the chosen keys."""
    c = config.construction
    columns = ["key", "sector", "group", "exact_key", "near_key"] + (["bands"] if c.dedup.minhash else [])
    table = read_column(candidates_dir, columns, CANDIDATE_SCHEMA).sort_by("key")
    exact = table.column("exact_key").to_numpy()
    near = table.column("near_key").to_numpy() if c.dedup.normalized else None
    # Straight from Arrow to one int64 matrix: millions of rows must not become Python ints.
    bands = (table.column("bands").combine_chunks().flatten().to_numpy().reshape(table.num_rows, c.dedup.bands)
             if c.dedup.minhash and table.num_rows else None)
    keep, removed = dedup_mask(exact, near, bands)
    keys = np.array(table.column("key").to_pylist(), dtype=object)[keep]
    sectors = np.array(table.column("sector").to_pylist(), dtype=object)[keep]
    groups = [tuple(g) for g, k in zip(table.column("group").to_pylist(), keep) if k]
    chosen, per_sector = set(), {}
    for name in ("I", "II", "III"):
        sector = getattr(c, name)
        if sector is None:
            continue
        rows = np.flatnonzero(sectors == name)
        picked = sample_evenly([keys[i] for i in rows], [groups[i] for i in rows], sector.target, c.seed)
        chosen.update(keys[rows[i]] for i in picked)
        per_sector[name] = {"target": sector.target, "unique_candidates": int(rows.size), "openings": len(picked)}
        if len(picked) < sector.target:
            logger.warning("sector %s: %d unique candidates for a target of %d; all are used. Fix: raise the "
                           "per-parent counts of construction.%s (or its inputs), or lower its target",
                           name, rows.size, sector.target, name)
    logger.info("duplicates removed: %s; openings per sector: %s", removed.as_dict(), per_sector)
    return {"duplicates_removed": removed.as_dict(), "sectors": per_sector, "chosen_keys": chosen}


def _write_openings(candidates_dir: str, openings_dir: str, chosen: set[str], selection: dict, name: str) -> None:
    filesystem, path = storage.filesystem_for(openings_dir)
    filesystem.delete_dir_contents(path, missing_dir_ok=True)  # the manifest goes first: incomplete until rewritten
    if chosen:
        ds = ray.data.read_parquet(candidates_dir, schema=CANDIDATE_SCHEMA, file_extensions=["parquet"])
        chosen_rows = ds.map_batches(keep_rows, fn_kwargs={"column": "key", "wanted": [ray.put(chosen)]},
                                     batch_format="pyarrow")
        named(chosen_rows, name).write_datasink(ShardSink(openings_dir, OPENING_LINE_SCHEMA))
    manifest = {"openings": len(chosen), **selection}
    storage.write_text(storage.join(openings_dir, MANIFEST), json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    logger.info("%d opening lines -> %s", len(chosen), openings_dir)


def openings_complete(openings_dir: str) -> bool:
    return storage.exists(storage.join(openings_dir, MANIFEST))

