"""Client-side rate limits and retry backoff for API backends.

Semantics (token buckets, refilled continuously):
- requests: ``requests_per_minute / 60`` per second, bucket of ``request_burst`` (default 1). With
  burst 1 requests are evenly spaced: 120 rpm lets one request start every 0.5 s, so 5 requests
  take >= 2 s. Even spacing is what providers enforce anyway (they quantize per-minute limits).
- tokens: ``tokens_per_minute / 60`` per second, bucket of ``token_burst`` (default one minute's
  budget, the provider's unit). A request is charged its prompt estimate + max_tokens before it
  starts (the worst case, so we never overshoot) and ``correct()`` refunds or adds the difference
  once the actual usage is known; the level may go negative, which delays later requests.
Waiters are served first come, first served: one lock, held while sleeping for the budget.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from ultrachat import observability

logger = logging.getLogger(__name__)


class _Bucket:
    def __init__(self, per_minute: float, capacity: float):
        self.rate = per_minute / 60.0
        self.capacity = capacity
        self.level = capacity  # start full: the first request never waits
        self.stamp = time.monotonic()

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_for(self, amount: float) -> float:
        return max(0.0, (amount - self.level) / self.rate)


class RateLimiter:
    """Shared by all requests of one backend (one actor). Both budgets optional; None: unlimited."""

    def __init__(self, requests_per_minute: float | None = None, tokens_per_minute: float | None = None, *,
                 request_burst: float = 1.0, token_burst: float | None = None):
        for name, value in (("requests_per_minute", requests_per_minute), ("tokens_per_minute", tokens_per_minute),
                            ("request_burst", request_burst), ("token_burst", token_burst)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0 (got {value}); leave it unset for no limit")
        self._requests = _Bucket(requests_per_minute, request_burst) if requests_per_minute else None
        self._tokens = (_Bucket(tokens_per_minute, token_burst or tokens_per_minute)
                        if tokens_per_minute else None)
        self._lock = asyncio.Lock()
        self.waited_s = 0.0  # total time callers spent waiting here (for metrics)
        self._warned_oversize = False

    @property
    def enabled(self) -> bool:
        return self._requests is not None or self._tokens is not None

    async def acquire(self, tokens: int = 0) -> float:
        """Wait until one request of ``tokens`` fits both budgets, charge it; return the seconds waited."""
        if not self.enabled:
            return 0.0
        if self._tokens is not None and tokens > self._tokens.capacity:
            # It could never fit: charge a full bucket instead of waiting forever.
            if not self._warned_oversize:
                logger.warning("a request charge of %d tokens exceeds the token burst %.0f; charging the burst",
                               tokens, self._tokens.capacity)
                self._warned_oversize = True
            tokens = int(self._tokens.capacity)
        start = time.monotonic()
        async with self._lock:
            while True:
                now = time.monotonic()
                delay = 0.0
                for bucket, amount in ((self._requests, 1), (self._tokens, tokens)):
                    if bucket is not None:
                        bucket.refill(now)
                        delay = max(delay, bucket.wait_for(amount))
                if delay <= 0:
                    break
                await asyncio.sleep(delay)
            if self._requests is not None:
                self._requests.level -= 1
            if self._tokens is not None:
                self._tokens.level -= tokens
        waited = time.monotonic() - start
        self.waited_s += waited
        observability.record_rate_limit_wait(waited)
        return waited

    def correct(self, charged: int, actual: int) -> None:
        """Replace a charge of ``charged`` tokens by the ``actual`` usage (refund or extra debit)."""
        if self._tokens is not None:
            self._tokens.refill(time.monotonic())
            self._tokens.level = min(self._tokens.capacity, self._tokens.level + charged - actual)


def backoff_delay(attempt: int, initial: float, maximum: float, retry_after: float | None = None,
                  rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (1 = the first retry).

    Exponential backoff with full jitter: uniform in [0, min(maximum, initial * 2**(attempt-1))], so
    many clients hit by the same outage spread out. A server's Retry-After is a floor: we never come
    back earlier than it asked, even when it asks for more than ``maximum`` (coming back earlier
    only earns another 429).
    """
    if attempt < 1:
        raise ValueError(f"attempt counts retries from 1 (got {attempt})")
    ceiling = min(maximum, initial * 2 ** min(attempt - 1, 62))  # min(): no float overflow on long runs
    delay = (rng or random).uniform(0.0, ceiling)
    if retry_after is not None and retry_after > 0:
        delay = max(delay, retry_after)
    return delay
