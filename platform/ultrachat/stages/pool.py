"""One actor-pool stage, as construction's LLM calls and the dialogues both run it.

The driver hands over rows that still need work (finished ones are filtered out before the pool, so a
resume never ships them to the actors), one batch per block. A Ray Data ``ActorPoolStrategy`` runs
``PoolWorker`` actors; each builds its row handler (backends, engine) on first use and runs every row
of every batch in flight on its event loop. A ``ShardSink`` writes each finished batch as its own
shard, so a kill loses at most the batches in flight.

Failure semantics (docs/design.md "Failures"):
- a row's own failure (an API error after its retries, an unparseable reply) is a ``failed:<reason>``
  record; once more than ``failures.max_failed_fraction`` of finished rows failed, the actors pass
  new batches through without calls (finished ones still reach the sink) and the stage ends with
  ``PartialFailure`` (nonzero exit; a re-run retries the failures and does the rest);
- a dead backend (``BackendDeadError``: the vLLM engine died) kills the actor, so Ray restarts it with
  a fresh engine (at most ``max_actor_restarts`` times) and runs its batches again;
- a batch that was in flight each time its actor died is run at most ``max_batch_attempts`` times,
  then its rows are recorded as ``failed:actor_died`` with the reason, never retried forever.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import uuid
import warnings
import weakref
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Protocol

import pyarrow as pa
import ray

from ultrachat import observability
from ultrachat.config.base import FailurePolicy, PoolResources
from ultrachat.errors import PartialFailure
from ultrachat.llm.base import BackendDeadError
from ultrachat.logs import setup_logging
from ultrachat.observability import actor_name, named
from ultrachat.secret_env import SecretEnv
from ultrachat.stages.progress import ProgressReporter, StageTracker, too_many_failed

logger = logging.getLogger(__name__)


class RowHandler(Protocol):
    """What a stage does with one row, built inside the actor. Records carry ``status`` and ``error``."""

    async def run(self, row: dict) -> dict: ...

    def failed(self, row: dict, reason: str, error: str) -> dict:
        """The record of a row that is given up on without running it."""

    def counts(self, records: list[dict]) -> Counter:
        """Progress counts beyond done/status (tokens, items)."""

    def observe(self, records: list[dict]) -> None:
        """Record the batch in the dashboard's metrics."""

    def close(self) -> None: ...


def batch_key(keys: list[str]) -> str:
    """The same for the same rows, whichever actor gets them (also the shard's name)."""
    return hashlib.sha1("\n".join(sorted(keys)).encode()).hexdigest()[:20]


def status_counts(records: list[dict], policy: FailurePolicy) -> Counter:
    """done, one count per status kind (kept, failed, ...), and ``failed_counted``: the failures that
    count toward ``max_failed_fraction``."""
    counts = Counter(["done"] * len(records) + [r["status"].split(":", 1)[0] for r in records])
    counts["failed_counted"] = counted_failures(Counter(r["status"] for r in records), policy)
    return counts


def prior_counts(statuses: Counter, policy: FailurePolicy) -> Counter:
    """``statuses``: full status -> count of the finished rows a run does not redo. What the tracker
    adds to its own counts when it judges the failure share."""
    return Counter(done=sum(statuses.values()), failed_counted=counted_failures(statuses, policy))


def counted_failures(statuses: Counter, policy: FailurePolicy) -> int:
    """``statuses``: full status -> count. The failures not exempted by ``failures.exempt_reasons``."""
    return sum(n for status, n in statuses.items()
               if status.startswith("failed:") and status.split(":", 1)[1] not in policy.exempt_reasons)


class PoolWorker:
    """The Ray Data actor: a generic shell around the stage's ``RowHandler``."""

    def __init__(self, handler_factory: Callable[[], RowHandler], key: str, schema: pa.Schema, tracker_name: str,
                 namespace: str, failures: dict, secrets: SecretEnv, log_level: str, run: str, rows_in_flight: int):
        setup_logging(log_level, role=f"actor={type(self).__name__} pid={os.getpid()}")
        observability.set_run(run)
        self.handler_factory, self.key, self.schema = handler_factory, key, schema
        self.tracker = ray.get_actor(tracker_name, namespace=namespace)
        self.failures = FailurePolicy.model_validate(failures)
        secrets.apply()  # API keys: reach the backends, never an argument, a config or a log
        self.handler: RowHandler | None = None
        self.in_flight: set[str] = set()
        # Rows run under this cap, across batches: a row of a queued batch takes the slot of a finished
        # row at once, instead of the slot idling until the slowest row of its batch is done.
        self.slots = asyncio.Semaphore(rows_in_flight)

    async def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        key = batch_key([r[self.key] for r in rows])
        state = await self.tracker.start_batch.remote(key)
        if state["stop"]:
            # Failures stopped the stage: the rest of the input drains through without a call. Raising
            # instead would abort the dataset and drop finished batches still on their way to the sink.
            return self.schema.empty_table()
        if self.handler is None:
            self.handler = self.handler_factory()  # here, on the actor's loop: vLLM binds to it
            self._close_with_ray_data_context()
        if state["attempt"] > self.failures.max_batch_attempts:
            logger.error("batch %s: given up after %d attempts: %s", key, state["attempt"] - 1, state["death"])
            error = (f"given up after {state['attempt'] - 1} attempts: {state['death']}. Fix: find why the actor "
                     f"dies on these rows; a re-run retries them")
            records = [self.handler.failed(row, "actor_died", error) for row in rows]
        else:
            self.in_flight.add(key)
            try:
                records = list(await asyncio.gather(*(self._run(row) for row in rows)))
            except BackendDeadError as err:
                await self._die(err)
            finally:
                self.in_flight.discard(key)
        counts = status_counts(records, self.failures) + self.handler.counts(records)
        last_error = next((f"{r['status']}: {r['error']}" for r in reversed(records)
                           if r["status"].startswith("failed")), "")
        await self.tracker.finish_batch.remote(dict(counts), last_error)
        self.handler.observe(records)
        return pa.Table.from_pylist(records, schema=self.schema)

    async def _run(self, row: dict) -> dict:
        async with self.slots:  # FIFO: the oldest batch's rows go first, so batches finish in order
            return await self.handler.run(row)

    async def _die(self, err: BackendDeadError) -> None:
        # Exiting (not raising) makes it a system failure: Ray restarts the actor with a fresh backend
        # and retries its batches, within max_actor_restarts / max_batch_attempts.
        logger.error("%s; exiting so that Ray restarts this actor with a fresh one", err)
        await self.tracker.actor_died.remote(sorted(self.in_flight), str(err))
        os._exit(1)

    def _close_with_ray_data_context(self) -> None:
        # On graceful actor exit Ray Data's __ray_shutdown__ drops the context that holds this UDF.
        # __del__ is not reliable then (a finished call's frame can keep this object alive), and at
        # interpreter teardown vLLM's own finalizers fail on half-torn-down modules. A finalizer on
        # the context stops the engines inside __ray_shutdown__ (and at exit otherwise). Ray 2.60 has
        # killed the actor's child processes by then (docs/generation.md), so this frees the client.
        context = getattr(ray.data, "_map_actor_context", None)
        if context is not None:
            weakref.finalize(context, self.close)

    def close(self) -> None:
        """Stop the handler's engines while the process is whole (idempotent)."""
        handler, self.handler = self.handler, None
        if handler is not None:
            logger.debug("actor exiting: stopping its engines")
            handler.close()


@dataclass
class PoolStage:
    """What the driver needs to run one stage on an actor pool."""

    worker: type[PoolWorker]  # its class name is the operator's name in the dashboard
    handler_factory: Callable[[], RowHandler]  # picklable; called once in each actor
    key: str  # the id column (also what shards are named by)
    schema: pa.Schema
    unit: str  # "dialogues", "LLM calls": progress lines and messages
    pool: PoolResources
    batch_size: int
    batches_in_flight: int
    failures: FailurePolicy
    describe: Callable[[Counter, int, float], str]
    dataset_name: str
    run_name: str | None
    run_label: str
    log_level: str
    secrets: dict[str, str]


def run_pool_stage(stage: PoolStage, rows, total: int, sink, prior: Counter | None = None) -> Counter:
    """Run ``rows`` (a Dataset of the ``total`` rows still to do) through the pool into ``sink``; return
    the tracker's counts. ``prior``: ``prior_counts`` of the output earlier runs finished. Raises
    ``PartialFailure`` when failures stopped the stage."""
    namespace = ray.get_runtime_context().namespace
    tracker_name = actor_name("progress", stage.run_name, uuid.uuid4().hex[:8])
    tracker = StageTracker.options(name=tracker_name, namespace=namespace).remote(
        total, stage.failures.model_dump(), stage.unit, dict(prior or {}))
    pool = stage.pool
    # One batch per block: each finished batch becomes its own shard (an input file would otherwise
    # be one block, written only at its very end).
    batches = rows.repartition(target_num_rows_per_block=stage.batch_size)
    with warnings.catch_warnings():
        # Ray 2.60 deprecates ray_remote_args, but max_restarts/max_task_retries have no named
        # parameter on map_batches yet: this is still the only way to bound them.
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        mapped = batches.map_batches(
            stage.worker,
            # Async actor: batches run at once on its event loop, sharing one engine. Twice batches_in_flight
            # are admitted, their rows capped at batches_in_flight x batch_size by the worker's slots, so
            # a finished row's slot goes to a waiting row at once (bench/generation.py (b): 81-85% of the
            # configured dialogues were in flight when a batch held its slots until its slowest row).
            # As many batches again wait queued, so an admitted one is replaced without a scheduling round.
            compute=ray.data.ActorPoolStrategy(min_size=pool.min_actors, max_size=pool.max_actors,
                                               max_tasks_in_flight_per_actor=3 * stage.batches_in_flight,
                                               max_concurrent_calls_per_actor=2 * stage.batches_in_flight),
            batch_size=stage.batch_size, batch_format="pyarrow", num_cpus=pool.num_cpus, num_gpus=pool.num_gpus,
            # Ray Data's defaults retry forever; bounded, a batch that keeps killing actors ends.
            max_restarts=stage.failures.max_actor_restarts, max_task_retries=stage.failures.max_batch_attempts,
            fn_constructor_kwargs={"handler_factory": stage.handler_factory, "key": stage.key, "schema": stage.schema,
                                   "tracker_name": tracker_name, "namespace": namespace,
                                   "failures": stage.failures.model_dump(), "secrets": SecretEnv(stage.secrets),
                                   "log_level": stage.log_level, "run": stage.run_label,
                                   "rows_in_flight": stage.batches_in_flight * stage.batch_size},
        )
    named(mapped, stage.dataset_name)
    logger.info("running %d %s on %d-%d actor(s)", total, stage.unit, pool.min_actors, pool.max_actors)
    try:
        with ProgressReporter(tracker, total, stage.describe):
            mapped.write_datasink(sink)
        stop = ray.get(tracker.stopped.remote())
        if stop:
            raise PartialFailure(f"stopped early: {stop}")
        return Counter(ray.get(tracker.snapshot.remote()))
    finally:
        ray.kill(tracker)


def check_failures(statuses: Counter, finished: int, policy: FailurePolicy, unit: str, where: str,
                   counts: dict) -> None:
    """After a stage: fail it (``PartialFailure``) when more than the allowed share of its output failed.
    ``statuses``: full status -> count over the stage's output."""
    failed = counted_failures(statuses, policy)
    if too_many_failed(failed, finished, policy, complete=True):
        raise PartialFailure(f"{failed} of {finished} {unit} in {where} failed, more than "
                             f"failures.max_failed_fraction={policy.max_failed_fraction:g} allows. Fix the cause (see the records' "
                             f"'error' column) and re-run: the failures are retried", counts)
