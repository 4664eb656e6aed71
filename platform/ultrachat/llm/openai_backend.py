"""ChatBackend on any OpenAI-compatible endpoint, through the official `openai` async client.

We do the retrying ourselves (the client's own retries are off) so that every attempt passes the
rate limiter, backoff is jittered and honours Retry-After, malformed answers are retried too, and
the counters below and the Ray metrics (ultrachat/observability.py) see every attempt. One instance
belongs to one event loop (the actor's): its semaphore, limiter and HTTP pool bind to the loop that
first uses them.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import random
import time

import openai

from ultrachat import observability
from ultrachat.config.chat import OpenAIBackend, Sampling
from ultrachat.llm.base import ChatError, ChatResult
from ultrachat.llm.rate_limit import RateLimiter, backoff_delay

logger = logging.getLogger(__name__)


class _Retryable(Exception):
    """One failed attempt that may succeed if repeated; ``kind`` names it (http_429, timeout, ...)."""

    def __init__(self, kind: str, detail: str, retry_after: float | None = None, refund: bool = False):
        super().__init__(detail)
        self.kind, self.retry_after, self.refund = kind, retry_after, refund


def _retry_after(headers) -> float | None:
    # The same headers the openai client itself reads; HTTP-date values are rare for 429s: ignored.
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            value = float(headers.get(name, ""))
        except (TypeError, ValueError):
            continue
        if value >= 0:
            return value / divisor
    return None


def estimate_prompt_tokens(messages: list[dict[str, str]]) -> int:
    # No tokenizer for a remote model: ~4 characters per token plus per-message overhead (OpenAI's rule
    # of thumb). Only the rate limiter uses it, and it is corrected by the real usage afterwards.
    return sum(len(str(m.get("content") or "")) // 4 + 4 for m in messages)


class OpenAIChatBackend:
    """ChatBackend for ``chat.backend: openai``. Fails at construction when the API key is missing."""

    def __init__(self, config: OpenAIBackend, *, limiter: RateLimiter | None = None,
                 rng: random.Random | None = None):
        # No key variable: a server without auth; the client still needs a non-empty string.
        key = os.environ.get(config.api_key_env, "").strip() if config.api_key_env else "EMPTY"
        if not key:
            raise ValueError(
                f"environment variable {config.api_key_env} is unset or empty, but chat.api_key_env names it "
                f"as the API key for {config.base_url}: export {config.api_key_env}=... (on a cluster: set it "
                f"in the job's runtime_env env_vars or the pod spec)")
        self.config = config
        self.model_name = config.model
        self._client = openai.AsyncOpenAI(base_url=config.base_url, api_key=key, max_retries=0,
                                          timeout=config.timeout_s)
        self._semaphore = asyncio.Semaphore(config.max_concurrency)
        self._limiter = limiter or RateLimiter(config.requests_per_minute, config.tokens_per_minute)
        self._rng = rng or random.Random()
        self._counts = collections.Counter()
        self._errors: collections.Counter = collections.Counter()  # final ChatError reasons
        self._attempt_errors: collections.Counter = collections.Counter()  # failed attempts by kind
        self._backoff_s = 0.0

    def stats(self) -> dict:
        return {
            "calls": self._counts["calls"], "requests": self._counts["requests"],
            "retries": self._counts["retries"], "ok": self._counts["ok"],
            "prompt_tokens": self._counts["prompt_tokens"], "completion_tokens": self._counts["completion_tokens"],
            "rate_limit_wait_s": self._limiter.waited_s, "backoff_wait_s": self._backoff_s,
            "errors": dict(self._errors), "attempt_errors": dict(self._attempt_errors),
        }

    async def chat(self, messages: list[dict[str, str]], sampling: Sampling,
                   response_format: dict | None = None) -> ChatResult:
        """``response_format``: OpenAI's structured-output request (e.g. a JSON schema), passed as is."""
        self._counts["calls"] += 1
        try:
            # The slot is held through backoff on purpose: an overloaded API gets fewer requests.
            async with self._semaphore:
                return await self._chat_with_retries(messages, sampling, response_format)
        except ChatError as err:
            self._errors[err.reason] += 1
            raise

    async def _chat_with_retries(self, messages: list[dict[str, str]], sampling: Sampling,
                                 response_format: dict | None) -> ChatResult:
        cfg = self.config
        charge = estimate_prompt_tokens(messages) + sampling.max_tokens
        last: _Retryable | None = None
        for attempt in range(cfg.max_retries + 1):
            if last is not None:
                delay = backoff_delay(attempt, cfg.backoff_initial_s, cfg.backoff_max_s, last.retry_after, self._rng)
                logger.info("%s: attempt %d failed (%s: %s); retrying in %.2f s", self.model_name, attempt,
                            last.kind, last, delay)
                self._counts["retries"] += 1
                self._backoff_s += delay
                observability.record_retry(last.kind, delay)
                await asyncio.sleep(delay)
            await self._limiter.acquire(charge)
            self._counts["requests"] += 1
            try:
                result = await self._attempt(messages, sampling, response_format)
            except _Retryable as err:
                self._attempt_errors[err.kind] += 1
                # An error status means no generation happened: give the tokens back. A timeout or a
                # garbled answer may still have been billed, so its charge stays.
                self._limiter.correct(charge, 0 if err.refund else charge)
                last = err
                continue
            self._limiter.correct(charge, result.prompt_tokens + result.completion_tokens)
            self._counts["ok"] += 1
            self._counts["prompt_tokens"] += result.prompt_tokens
            self._counts["completion_tokens"] += result.completion_tokens
            return result
        hint = (f"; is the server at {cfg.base_url} running?" if last.kind == "connection" else "")
        logger.warning("%s: giving up after %d attempts: %s: %s", self.model_name, cfg.max_retries + 1,
                       last.kind, last)
        raise ChatError(f"retries_exhausted:{last.kind}",
                        f"{cfg.base_url} (model {cfg.model}) failed {cfg.max_retries + 1} attempts, the last "
                        f"with {last.kind}: {last}{hint}")

    async def _attempt(self, messages: list[dict[str, str]], sampling: Sampling,
                       response_format: dict | None) -> ChatResult:
        cfg = self.config
        kwargs = {"temperature": sampling.temperature, "top_p": sampling.top_p, "max_tokens": sampling.max_tokens}
        if sampling.seed is not None:
            kwargs["seed"] = sampling.seed
        if response_format is not None:
            kwargs["response_format"] = response_format
        started = time.monotonic()
        try:
            # The client's timeout is per socket operation; this one bounds the whole attempt.
            async with asyncio.timeout(cfg.timeout_s):
                completion = await self._client.chat.completions.create(model=cfg.model, messages=messages, **kwargs)
        except (TimeoutError, openai.APITimeoutError):
            raise _Retryable("timeout", f"no answer within timeout_s={cfg.timeout_s:g}") from None
        except openai.APIConnectionError as err:
            raise _Retryable("connection", f"{err} ({err.__cause__ or 'no detail'})") from None
        except openai.APIStatusError as err:
            self._raise_for_status(err)
        except (json.JSONDecodeError, openai.APIResponseValidationError) as err:  # a 200 with a broken body
            raise _Retryable("malformed", f"response is not a valid completion: {err}") from None
        choices = getattr(completion, "choices", None)
        if not choices or getattr(choices[0], "message", None) is None:
            raise _Retryable("malformed", "response has no choices[0].message")
        choice, usage = choices[0], getattr(completion, "usage", None)
        logger.debug("%s: answered in %.2f s", self.model_name, time.monotonic() - started)
        return ChatResult(
            text=choice.message.content or "",  # empty stays empty: the dialogue loop filters it
            finish_reason=choice.finish_reason or "unknown",
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            model=getattr(completion, "model", None) or cfg.model,
        )

    def _raise_for_status(self, err: openai.APIStatusError):
        cfg, code = self.config, err.status_code
        if code == 429:
            raise _Retryable("http_429", err.message, _retry_after(err.response.headers), refund=True) from None
        if code >= 500 or code == 408:  # server trouble or a server-side timeout: transient
            raise _Retryable(f"http_{code}", err.message, refund=True) from None
        if code == 401:
            message = (f"{cfg.base_url} rejected the API key in ${cfg.api_key_env} (HTTP 401): check the key, "
                       f"then export {cfg.api_key_env}=...")
        elif code == 403:
            message = f"{cfg.base_url} refused access (HTTP 403) with the key in ${cfg.api_key_env}: {err.message}"
        elif code == 404:
            message = f"{cfg.base_url} has no model '{cfg.model}' or no such endpoint (HTTP 404): check chat.model " \
                      f"and chat.base_url: {err.message}"
        else:
            message = f"{cfg.base_url} rejected the request (HTTP {code}): {err.message}"
        raise ChatError(f"http_{code}", message) from None

    async def close(self) -> None:
        await self._client.close()
