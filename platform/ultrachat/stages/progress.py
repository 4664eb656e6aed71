"""Run-wide state of an actor-pool stage: one small Ray actor that the pool's actors report to.

It sums their counts (for the driver's progress line), counts how often each batch was started
(a batch started again after its actor died is a retry; past ``max_batch_attempts`` its rows are
recorded as failed instead of run), and decides when failures stop the stage early.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Callable

import ray

from ultrachat.config.base import FailurePolicy

logger = logging.getLogger(__name__)

UNKNOWN_DEATH = ("the actor died while this batch was in flight (killed by the OS or Ray, e.g. out of memory, or a "
                 "crash: see the worker's log in the Ray dashboard)")


def too_many_failed(failed: int, finished: int, policy: FailurePolicy, complete: bool) -> bool:
    """More than ``max_failed_fraction`` of ``finished`` failed, judged once ``min_finished`` are done,
    or when the stage is ``complete`` and everything failed (a small stage that never reaches
    ``min_finished``: some success means the cause is not everywhere)."""
    judged = finished >= policy.min_finished or (complete and failed == finished)
    return finished > 0 and judged and failed > policy.max_failed_fraction * finished


@ray.remote(num_cpus=0)
class StageTracker:
    def __init__(self, total: int, policy: dict, unit: str, prior: dict | None = None):
        """``prior``: done / failed_counted of the stage's output that earlier runs finished and this
        run does not redo; the failure share is judged over the whole output, so that a re-run that
        retries only an earlier run's few failures is judged as that run was."""
        self.total, self.unit = total, unit
        self.prior = Counter(prior or {})
        self.policy = FailurePolicy.model_validate(policy)
        self.counts: Counter = Counter()
        self.attempts: Counter = Counter()
        self.deaths: dict[str, str] = {}  # batch key -> why its actor died last
        self.last_error = ""
        self.stop_reason: str | None = None

    def start_batch(self, key: str) -> dict:
        """Called before a batch runs: its attempt number, why its actor died before, and whether the
        stage is stopping."""
        self.attempts[key] += 1
        if self.attempts[key] > 1 and key not in self.deaths:
            self.deaths[key] = UNKNOWN_DEATH
        return {"attempt": self.attempts[key], "death": self.deaths.get(key, ""), "stop": self.stop_reason}

    def finish_batch(self, counts: dict, last_error: str = "") -> None:
        self.counts.update(counts)
        self.last_error = last_error or self.last_error
        done = self.counts["done"] + self.prior["done"]
        failed = self.counts["failed_counted"] + self.prior["failed_counted"]
        if self.stop_reason is None and too_many_failed(failed, done, self.policy,
                                                        complete=self.counts["done"] >= self.total):
            self.stop_reason = (f"{failed} of {done} {self.unit} finished so far failed, more than failures."
                                f"max_failed_fraction={self.policy.max_failed_fraction:g} allows"
                                + (f"; last error: {self.last_error}" if self.last_error else ""))

    def actor_died(self, keys: list[str], reason: str) -> None:
        for key in keys:
            self.deaths[key] = reason

    def snapshot(self) -> dict:
        return dict(self.counts)

    def stopped(self) -> str | None:
        return self.stop_reason


class ProgressReporter:
    """A driver thread that logs the tracker's totals every ``interval_s`` until stopped."""

    def __init__(self, tracker, total: int, describe: Callable[[Counter, int, float], str],
                 interval_s: float = 15.0):
        """``describe(counts, total, elapsed_s) -> str`` makes the line."""
        self.tracker, self.total, self.interval_s, self.describe = tracker, total, interval_s, describe
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stage-progress", daemon=True)
        self._started = time.monotonic()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        self.log()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.log()

    def log(self) -> None:
        try:
            counts = Counter(ray.get(self.tracker.snapshot.remote(), timeout=10))
        except Exception:  # progress must never break the run
            return
        logger.info("%s", self.describe(counts, self.total, max(time.monotonic() - self._started, 1e-6)))
