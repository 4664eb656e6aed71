"""OpenAIChatBackend against the fake OpenAI server: retries, errors, limits, over real sockets."""

import asyncio
import random
import socket
import time

import pytest

from ultrachat.config.chat import OpenAIBackend, Sampling
from ultrachat.devtools.fake_openai import FakeBehavior, FakeOpenAIServer
from ultrachat.llm.base import ChatError, ChatResult
from ultrachat.llm.openai_backend import OpenAIChatBackend
from ultrachat.llm.rate_limit import RateLimiter, backoff_delay

HELLO = [{"role": "user", "content": "hello there, how are you"}]  # 5 words, estimated at 10 tokens
SAMPLING = Sampling(temperature=0.3, top_p=0.9, max_tokens=64, seed=11)


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("UC_TEST_KEY", "test-key")


@pytest.fixture
def server():
    with FakeOpenAIServer(FakeBehavior(replies=["a fine answer"], retry_after_s=0.2)) as srv:
        yield srv


def config(base_url, **overrides):
    settings = dict(backend="openai", base_url=base_url, model="fake", api_key_env="UC_TEST_KEY", max_retries=3,
                    timeout_s=5, backoff_initial_s=0.01, backoff_max_s=0.05)
    return OpenAIBackend(**{**settings, **overrides})


def run_chats(cfg, n=1, sampling=SAMPLING, concurrent=False):
    """Build the backend inside the loop that uses it, run n chats, close; return (results, stats)."""

    async def main():
        backend = OpenAIChatBackend(cfg)
        try:
            if concurrent:
                results = await asyncio.gather(*(backend.chat(HELLO, sampling) for _ in range(n)))
            else:
                results = [await backend.chat(HELLO, sampling) for _ in range(n)]
            return results, backend.stats()
        finally:
            await backend.close()

    return asyncio.run(main())


def chat_error(cfg, sampling=SAMPLING):
    async def main():
        backend = OpenAIChatBackend(cfg)
        try:
            with pytest.raises(ChatError) as err:
                await backend.chat(HELLO, sampling)
            return err.value, backend.stats()
        finally:
            await backend.close()

    return asyncio.run(main())


def test_chat_result_request_and_stats(server):
    (result,), stats = run_chats(config(server.base_url))
    assert result == ChatResult(text="a fine answer", finish_reason="stop", prompt_tokens=5, completion_tokens=3,
                                model="fake")
    body = server.stats.bodies[-1]
    assert body["model"] == "fake" and body["messages"] == HELLO
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["seed"]) == (0.3, 0.9, 64, 11)
    assert stats == {"calls": 1, "requests": 1, "retries": 0, "ok": 1, "prompt_tokens": 5, "completion_tokens": 3,
                     "rate_limit_wait_s": 0.0, "backoff_wait_s": 0.0, "errors": {}, "attempt_errors": {}}


def test_length_finish_reason_passes_through(server):
    server.behavior.replies = ["one two three four five"]
    (result,), _ = run_chats(config(server.base_url), sampling=Sampling(max_tokens=2))
    assert (result.text, result.finish_reason, result.completion_tokens) == ("one two", "length", 2)


@pytest.mark.parametrize("fault,kind", [("429", "http_429"), ("500", "http_500"), ("503", "http_503"),
                                        ("timeout", "timeout"), ("malformed", "malformed")])
def test_each_fault_is_retried_then_succeeds(server, fault, kind):
    server.behavior.retry_after_s = 0.05
    server.add_faults(fault)
    (result,), stats = run_chats(config(server.base_url, timeout_s=0.3))
    assert result.text == "a fine answer"
    assert server.stats.total == 2 and server.stats.faults[fault] == 1
    assert stats["retries"] == 1 and stats["requests"] == 2 and stats["attempt_errors"] == {kind: 1}
    assert stats["errors"] == {}


def test_429_waits_at_least_retry_after(server):
    server.behavior.retry_after_s = 0.3  # above backoff_max_s: the server's word still wins
    server.add_faults("429", "429")
    (result,), stats = run_chats(config(server.base_url))
    first, second, third = server.stats.arrivals
    assert second - first >= 0.3 and third - second >= 0.3
    assert stats["backoff_wait_s"] >= 0.6 and result.text


def test_retries_exhausted_names_the_last_failure(server):
    server.add_faults("503", "503", "503")
    err, stats = chat_error(config(server.base_url, max_retries=2))
    assert err.reason == "retries_exhausted:http_503" and "3 attempts" in str(err)
    assert server.stats.total == 3
    assert stats["errors"] == {"retries_exhausted:http_503": 1} and stats["attempt_errors"] == {"http_503": 3}


@pytest.mark.parametrize("fault", ["400", "404", "422"])
def test_client_errors_are_not_retried(server, fault):
    server.add_faults(fault)
    err, stats = chat_error(config(server.base_url))
    assert err.reason == f"http_{fault}" and server.stats.total == 1 and stats["retries"] == 0


def test_rejected_key_is_401_and_names_the_variable():
    with FakeOpenAIServer(FakeBehavior(required_api_key="the-right-key")) as srv:
        err, _ = chat_error(config(srv.base_url))
        assert err.reason == "http_401" and srv.stats.total == 1
        assert "$UC_TEST_KEY" in str(err) and "export UC_TEST_KEY=" in str(err)


@pytest.mark.parametrize("value", [None, "", "   "])
def test_missing_key_fails_at_construction(server, monkeypatch, value):
    if value is None:
        monkeypatch.delenv("UC_TEST_KEY")
    else:
        monkeypatch.setenv("UC_TEST_KEY", value)
    with pytest.raises(ValueError) as err:
        OpenAIChatBackend(config(server.base_url))
    message = str(err.value)
    assert "UC_TEST_KEY" in message and "chat.api_key_env" in message and "export UC_TEST_KEY=..." in message
    assert server.stats.total == 0


def test_unreachable_endpoint_fails_within_bounded_time():
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    err, stats = chat_error(config(f"http://127.0.0.1:{port}/v1", max_retries=2))
    assert time.monotonic() - start < 5
    assert err.reason == "retries_exhausted:connection" and "running" in str(err)
    assert stats["requests"] == 3


def test_empty_reply_is_returned_not_retried(server):
    server.add_faults("empty")
    (result,), stats = run_chats(config(server.base_url))
    assert result.text == "" and result.completion_tokens == 0 and stats["retries"] == 0


def test_concurrency_bound_is_what_the_server_sees(server):
    server.behavior.latency_s = 0.15
    results, stats = run_chats(config(server.base_url, max_concurrency=3), n=10, concurrent=True)
    assert len(results) == 10 and server.stats.max_in_flight == 3


def test_requests_per_minute_spaces_requests(server):
    # 240 rpm with burst 1: one start every 0.25 s, so 5 requests span >= 1 s.
    start = time.monotonic()
    _, stats = run_chats(config(server.base_url, requests_per_minute=240), n=5, concurrent=True)
    arrivals = list(server.stats.arrivals)
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    # The limiter releases exactly every 0.25 s; the server sees that plus client-side jitter (the first
    # request also opens the connection), hence the slack per gap but not over the whole span.
    assert min(gaps) >= 0.2 and arrivals[-1] - arrivals[0] >= 0.9
    assert time.monotonic() - start >= 1.0 and stats["rate_limit_wait_s"] >= 2.0  # 0.25+0.5+0.75+1.0


def test_tokens_per_minute_charges_actual_usage(server):
    # 600 tpm = 10 tokens/s, bucket 600. A call charges its prompt estimate (10) + max_tokens up front,
    # then the actual usage replaces the charge.
    cfg = config(server.base_url, tokens_per_minute=600)
    whole_bucket = Sampling(max_tokens=590)

    async def timed_pair(second: Sampling):
        backend = OpenAIChatBackend(cfg)  # a fresh, full bucket
        try:
            await backend.chat(HELLO, whole_bucket)
            t0 = time.monotonic()
            await backend.chat(HELLO, second)
            return time.monotonic() - t0, backend.stats()
        finally:
            await backend.close()

    server.behavior.replies = [" ".join(["w"] * 590)]  # the long reply really uses 5 + 590 tokens
    throttled, stats = asyncio.run(timed_pair(Sampling(max_tokens=5)))  # needs 15, ~5 left: waits ~1 s
    assert throttled >= 0.8 and stats["rate_limit_wait_s"] >= 0.8

    server.behavior.replies = ["ok"]  # uses 5 + 1: ~594 of the 600 charged come back at once
    refunded, stats = asyncio.run(timed_pair(Sampling(max_tokens=100)))  # unrefunded, this would wait 11 s
    assert refunded < 0.3 and stats["rate_limit_wait_s"] < 0.3


def test_backoff_delay_jitter_cap_and_retry_after():
    rng = random.Random(0)
    delays = [backoff_delay(attempt, 1.0, 8.0, rng=rng) for attempt in range(1, 10) for _ in range(20)]
    assert all(0 <= d <= 8.0 for d in delays) and len(set(delays)) > 100  # jittered, capped
    assert all(backoff_delay(1, 1.0, 8.0, rng=rng) <= 1.0 for _ in range(50))  # first retry: [0, initial]
    assert all(backoff_delay(3, 1.0, 8.0, retry_after=2.5, rng=rng) >= 2.5 for _ in range(50))
    assert backoff_delay(1, 1.0, 8.0, retry_after=30) == 30  # the server's floor beats the cap
    assert backoff_delay(1000, 1.0, 8.0) <= 8.0
    with pytest.raises(ValueError):
        backoff_delay(0, 1.0, 8.0)


def test_rate_limiter_unlimited_and_validation():
    limiter = RateLimiter()
    assert not limiter.enabled and asyncio.run(limiter.acquire(10**9)) == 0.0
    with pytest.raises(ValueError, match="requests_per_minute"):
        RateLimiter(requests_per_minute=0)
