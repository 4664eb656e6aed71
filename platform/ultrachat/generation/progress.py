"""Run-wide progress: actors add their counts to one small Ray actor; the driver logs a line per
interval (dialogues or LLM calls done, their outcomes, tokens in/out, units per second)."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

import ray

logger = logging.getLogger(__name__)


@ray.remote(num_cpus=0)
class ProgressTracker:
    def __init__(self):
        self.counts: Counter = Counter()

    def add(self, counts: dict) -> None:
        self.counts.update(counts)

    def snapshot(self) -> dict:
        return dict(self.counts)


def batch_counts(records: list[dict]) -> dict:
    counts: Counter = Counter(done=len(records))
    for record in records:
        counts[record["status"].split(":", 1)[0]] += 1
        usage = record["usage"]
        counts["tokens_in"] += usage["user_prompt_tokens"] + usage["assistant_prompt_tokens"]
        counts["tokens_out"] += usage["user_completion_tokens"] + usage["assistant_completion_tokens"]
    return dict(counts)


class ProgressReporter:
    """A driver thread that logs the tracker's totals every ``interval_s`` until stopped."""

    def __init__(self, tracker, total: int, interval_s: float = 15.0, describe=None):
        """``describe(counts, total, elapsed_s) -> str`` makes the line; the default is for dialogues."""
        self.tracker, self.total, self.interval_s = tracker, total, interval_s
        self.describe = describe or describe_dialogues
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="generation-progress", daemon=True)
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
            c = ray.get(self.tracker.snapshot.remote(), timeout=10)
        except Exception:  # progress must never break the run
            return
        logger.info("%s", self.describe(c, self.total, max(time.monotonic() - self._started, 1e-6)))


def describe_dialogues(c: dict, total: int, elapsed: float) -> str:
    return (f"dialogues {c.get('done', 0)}/{total} (kept {c.get('kept', 0)}, filtered {c.get('filtered', 0)}, "
            f"failed {c.get('failed', 0)}, invalid {c.get('invalid', 0)}) | tokens in {c.get('tokens_in', 0)} "
            f"out {c.get('tokens_out', 0)} | {c.get('done', 0) / elapsed:.2f} dialogues/s")
