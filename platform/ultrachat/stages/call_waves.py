"""Waves of cached LLM calls on an actor pool: the evaluate job's answers and judgments, the
preferences job's completions and ratings.

Every call is named by a content key (what was asked, of whom, how); its record lands in a cache shard
under the wave's folder as soon as its batch finishes (``ShardSink``), so a killed run loses only the
batches in flight and its re-run makes no call twice. A failed call is retried by the next run and
its old record dropped once the retry is recorded.
"""

from __future__ import annotations

import logging

import pyarrow as pa

from ultrachat.errors import PartialFailure
from ultrachat.shards import ShardSink, drop_superseded_failures, read_column
from ultrachat.stages.pool import PoolStage, run_pool_stage
from ultrachat.stages.progress import too_many_failed

logger = logging.getLogger(__name__)

# One record per call.
CALL_SCHEMA = pa.schema([
    ("key", pa.string()), ("kind", pa.string()), ("endpoint", pa.string()), ("status", pa.string()),
    ("text", pa.string()), ("verdict", pa.string()), ("structured", pa.bool_()),
    ("finish_reason", pa.string()), ("prompt_tokens", pa.int64()), ("completion_tokens", pa.int64()),
    ("attempts", pa.int64()), ("error", pa.string()), ("model", pa.string()), ("started_at", pa.float64()),
    ("seconds", pa.float64()),
])


def cached_calls(directory: str) -> dict[str, dict]:
    """key -> record; a success (or an unparseable verdict, the judge's own answer) beats a failure."""
    table = read_column(directory, CALL_SCHEMA.names, CALL_SCHEMA)
    out: dict[str, dict] = {}
    for record in table.to_pylist():
        old = out.get(record["key"])
        if old is None or (old["status"].startswith("failed") and not record["status"].startswith("failed")):
            out[record["key"]] = record
    return out


def run_wave(stage: PoolStage, wave: str, rows: list[dict], cached: dict, directory: str,
             calls: dict) -> str | None:
    """Run the rows not done in the cache; record the wave's call counts in ``calls[wave]``; return the
    reason the wave stopped early, if it did."""
    import ray

    todo = [r for r in rows if r["key"] not in cached or cached[r["key"]]["status"].startswith("failed")]
    retried = {r["key"] for r in todo if r["key"] in cached}
    logger.info("%s: %d calls, %d in the cache, %d to make (%d failed before, retried)", wave, len(rows),
                len(rows) - len(todo), len(todo), len(retried))
    stopped = None
    if todo:
        try:
            # One block per batch: from_items' default (a block per row here) left the streaming
            # repartition feeding the actor one batch at a time (bench/evaluation.py: 0.18 -> 0.56 of C/L).
            blocks = -(-len(todo) // stage.batch_size)
            run_pool_stage(stage, ray.data.from_items(todo, override_num_blocks=blocks), len(todo),
                           ShardSink(directory, CALL_SCHEMA, key="key"))
        except PartialFailure as err:
            stopped = str(err)
    drop_superseded_failures(directory, retried, CALL_SCHEMA, key="key")
    now = cached_calls(directory)
    keys = {r["key"] for r in rows}
    statuses = [now[k]["status"] for k in keys if k in now]
    calls[wave] = {"planned": len(keys), "cached": len(keys) - len(todo), "made_now": len(todo),
                   "ok": statuses.count("ok"), "unparseable": statuses.count("unparseable"),
                   "failed": sum(s.startswith("failed") for s in statuses), "missing": len(keys) - len(statuses)}
    return stopped


def check_waves(job: str, calls: dict, stopped: list[str | None], failures, counts: dict, finished: str,
                fix: str) -> None:
    """After a job's waves: raise PartialFailure (exit 3, with ``counts``) when a wave stopped early or
    failed beyond ``failures`` (judged per wave: a judge that fails every call fails the run, whatever
    the other wave did); else warn about failures within the policy. ``finished`` says where the
    finished work is, ``fix`` where the errors are named."""
    failed = sum(c["failed"] for c in calls.values())
    problem = next((s for s in stopped if s), None)
    if problem or any(too_many_failed(c["failed"], c["planned"] - c["missing"], failures, complete=True)
                      for c in calls.values()):
        raise PartialFailure(
            f"{job}: {failed} calls failed ({problem or 'more than failures.max_failed_fraction allows'}); "
            f"{finished}. Fix the endpoint named in the errors ({fix}) and re-run: only the failed calls are "
            f"made again", counts)
    if failed:
        logger.warning("%s: %d calls failed (within failures.max_failed_fraction); a re-run retries them", job,
                       failed)
