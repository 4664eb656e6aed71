"""How the platform shows up in the Ray dashboard: its own metrics and the names of its data sets.

Metrics go through ``ray.util.metrics``: each process hands them to its node's metrics agent, which
serves them to Prometheus as ``ray_<name>``, plus ``_total`` for a counter, labelled with our tags
and Ray's own (``WorkerId``, ``NodeAddress``, ``SessionName``, ...); docs/design.md "Observability"
lists them. The metric objects are made lazily, once per process, where they are recorded (a Ray
Data actor, a training worker), never pickled from the driver. Recording is a no-op where Ray is not
initialised (unit tests, a plain Python process) and never raises: a metric must not break a job.

Every series carries ``run`` (the config's ``run_name``, else the job's name: the ``ultrachat_run``
the Jobs page shows), set once per process with ``set_run``; Ray workers never serve two jobs.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections import Counter
from dataclasses import dataclass

logger = logging.getLogger(__name__)

COUNTER, GAUGE = "counter", "gauge"


@dataclass(frozen=True)
class MetricSpec:
    name: str  # as given to ray.util.metrics
    kind: str
    description: str
    tags: tuple[str, ...]

    @property
    def prometheus_name(self) -> str:
        # Ray's agent registers every metric as "ray_<name>"; the Prometheus exposition of a counter
        # family appends "_total" (and strips one already there, so it never doubles).
        return f"ray_{self.name}" + ("_total" if self.kind == COUNTER else "")


DIALOGUES = MetricSpec("ultrachat_dialogues", COUNTER, "Dialogues the generation actors finished, by outcome: "
                       "status kept/filtered/failed/invalid, reason (after the colon of the record's status)",
                       ("run", "status", "reason", "sector"))
LLM_TOKENS = MetricSpec("ultrachat_llm_tokens", COUNTER, "LLM tokens per role (user, assistant, construction): "
                        "kind=prompt (in) or completion (out)", ("run", "role", "kind"))
CONSTRUCTION_CALLS = MetricSpec("ultrachat_construction_calls", COUNTER, "Opening-line construction LLM calls "
                                "finished, by stage and status (ok/failed)", ("run", "stage", "status"))
API_RETRIES = MetricSpec("ultrachat_api_retries", COUNTER, "API requests retried, by the failed attempt's reason "
                         "(http_429, http_5xx, timeout, connection, malformed)", ("run", "reason"))
API_WAIT_SECONDS = MetricSpec("ultrachat_api_wait_seconds", COUNTER, "Seconds API calls spent waiting: "
                              "cause=rate_limiter (the client-side RPM/TPM budget) or backoff (before a retry, "
                              "at least the server's Retry-After)", ("run", "cause"))
TRAIN_TOKENS = MetricSpec("ultrachat_train_tokens", COUNTER, "Tokens trained on, all ranks (rank 0 records each "
                          "logging interval's all-reduced count)", ("run",))
TRAIN_TOKENS_PER_SECOND = MetricSpec("ultrachat_train_tokens_per_second", GAUGE, "Training throughput of the "
                                     "latest logging interval, all ranks", ("run",))
TRAIN_LOSS = MetricSpec("ultrachat_train_loss", GAUGE, "Mean training loss of the latest logging interval",
                        ("run",))
TRAIN_REWARD_ACCURACY = MetricSpec("ultrachat_train_reward_accuracy", GAUGE, "method dpo: share of the latest "
                                   "logging interval's pairs whose chosen answer got the higher implicit reward",
                                   ("run",))
TRAIN_REWARD_MARGIN = MetricSpec("ultrachat_train_reward_margin", GAUGE, "method dpo: mean chosen minus rejected "
                                 "implicit reward (beta x log-ratio to the reference) of the latest interval",
                                 ("run",))

METRICS: tuple[MetricSpec, ...] = (DIALOGUES, LLM_TOKENS, CONSTRUCTION_CALLS, API_RETRIES, API_WAIT_SECONDS,
                                   TRAIN_TOKENS, TRAIN_TOKENS_PER_SECOND, TRAIN_LOSS, TRAIN_REWARD_ACCURACY,
                                   TRAIN_REWARD_MARGIN)

_lock = threading.Lock()
_made: dict[str, object] | None = None
_disabled = False
_run = "ultrachat"


def run_label(run_name: str | None, job: str) -> str:
    """The ``run`` tag: what ray_runtime.init_ray puts in the job metadata as ``ultrachat_run``."""
    return run_name or job


def set_run(run: str) -> None:
    global _run
    _run = run


def dataset_name(job: str, run_name: str | None, part: str | None = None) -> str:
    """``ultrachat-<job>[-<run_name>][-<part>]``: the prefix of the data set's id in the Ray Data view and
    of its ``dataset`` label in Ray Data's metrics (Ray appends a uuid, so concurrent runs never clash)."""
    return "-".join(p for p in ("ultrachat", job, run_name, part) if p)


def named(dataset, name: str):
    dataset.set_name(name)  # returns None: this keeps pipelines readable
    return dataset


def actor_name(kind: str, run_name: str | None, suffix: str) -> str:
    """A named actor's name: readable in the Actors view, unique per run through ``suffix``."""
    run = re.sub(r"[^A-Za-z0-9_.-]+", "-", run_name or "")
    return "-".join(p for p in ("ultrachat", kind, run, suffix) if p)


# ------------------------------------------------------------------------------------------ recording


def record_dialogues(records: list[dict]) -> None:
    counts = Counter()
    for record in records:
        status, _, reason = record["status"].partition(":")
        counts[(status, reason, record["sector"])] += 1
    for (status, reason, sector), n in counts.items():
        _inc(DIALOGUES, n, status=status, reason=reason, sector=sector)


def record_tokens(role: str, prompt_tokens: int, completion_tokens: int) -> None:
    _inc(LLM_TOKENS, prompt_tokens, role=role, kind="prompt")
    _inc(LLM_TOKENS, completion_tokens, role=role, kind="completion")


def record_construction_calls(results: list[dict]) -> None:
    counts = Counter((r["stage"], r["status"].partition(":")[0]) for r in results)
    for (stage, status), n in counts.items():
        _inc(CONSTRUCTION_CALLS, n, stage=stage, status=status)


def record_retry(reason: str, backoff_s: float) -> None:
    _inc(API_RETRIES, 1, reason=reason)
    _inc(API_WAIT_SECONDS, backoff_s, cause="backoff")


def record_rate_limit_wait(seconds: float) -> None:
    if seconds >= 1e-3:  # every acquire takes a few microseconds; those are not waits
        _inc(API_WAIT_SECONDS, seconds, cause="rate_limiter")


def record_training_interval(metrics: dict) -> None:
    """One logging interval's all-reduced numbers (training/metrics.py IntervalMeter.close)."""
    _inc(TRAIN_TOKENS, metrics["interval_tokens"])
    _set(TRAIN_TOKENS_PER_SECOND, metrics["tokens_per_s"])
    _set(TRAIN_LOSS, metrics["loss"])
    if "reward_accuracy" in metrics:
        _set(TRAIN_REWARD_ACCURACY, metrics["reward_accuracy"])
        _set(TRAIN_REWARD_MARGIN, metrics["reward_margin"])


# ------------------------------------------------------------------------------------------ plumbing


def _metric(spec: MetricSpec):
    global _made
    if _disabled:
        return None
    ray = sys.modules.get("ray")  # never import Ray just to record: without it there is nothing to do
    if ray is None or not ray.is_initialized():
        return None
    if _made is None:
        with _lock:
            if _made is None:
                try:
                    from ray.util import metrics

                    types = {COUNTER: metrics.Counter, GAUGE: metrics.Gauge}
                    _made = {s.name: types[s.kind](s.name, description=s.description, tag_keys=s.tags)
                             for s in METRICS}
                except Exception as err:
                    _disable(err)
                    return None
    return _made[spec.name]


def _inc(spec: MetricSpec, value: float, **tags: str) -> None:
    if value <= 0:  # ray.util.metrics.Counter refuses it; nothing happened anyway
        return
    metric = _metric(spec)
    if metric is not None:
        try:
            metric.inc(float(value), tags={"run": _run, **{k: str(v) for k, v in tags.items()}})
        except Exception as err:
            _disable(err)


def _set(spec: MetricSpec, value: float, **tags: str) -> None:
    metric = _metric(spec)
    if metric is not None:
        try:
            metric.set(float(value), tags={"run": _run, **{k: str(v) for k, v in tags.items()}})
        except Exception as err:
            _disable(err)


def _disable(err: Exception) -> None:
    global _disabled
    _disabled = True
    logger.warning("Ray metrics are off in this process: %s: %s", type(err).__name__, err)
