"""A real OpenAI-compatible HTTP server on 127.0.0.1 that stands in for a paid API in tests and benchmarks.

It speaks `GET /v1/models`, non-streaming `POST /v1/chat/completions` and `POST /v1/embeddings` (a
hashed bag of words: equal texts embed equal, texts sharing words embed close), answers with scripted or
deterministic pseudo-random text, and injects faults (429 with Retry-After, 5xx, hangs, malformed JSON,
empty replies) on demand, so client retry logic is exercised over real sockets.

From a test::

    with FakeOpenAIServer(FakeBehavior(latency_s=0.1)) as server:
        server.add_faults("429", "500")          # the next two requests fail, in this order
        client = openai.OpenAI(base_url=server.base_url, api_key="x")
        ...
        assert server.stats.faults["429"] == 1

From a shell (benchmarks): ``python -m ultrachat.devtools.fake_openai --port 8011 --latency 0.5``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import logging
import random
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

from aiohttp import web

logger = logging.getLogger(__name__)

# Fault kinds besides any "4xx"/"5xx" status code (which is answered as that HTTP error).
SPECIAL_FAULTS = ("timeout", "malformed", "empty")
_WORDS = ("the model data answer question people time system example result value idea way world "
          "language history science water light energy city music plan work study test simple small "
          "large useful good clear often always never because while after before and but so").split()


@dataclass
class FakeBehavior:
    """How the server answers. Mutable while the server runs: it is read afresh for every request."""

    latency_s: float = 0.0  # fixed delay before every answer
    replies: list[str] | None = None  # scripted replies, served round-robin; None: pseudo-random text
    # Computes the reply from the request's messages (takes precedence over `replies`): lets a test
    # answer list requests with lists of the asked size, in the shapes real models use.
    reply_fn: Callable[[list], str] | None = None
    faults: list[str] = field(default_factory=list)  # applied to the next requests in order, consumed
    retry_after_s: float = 1.0  # Retry-After header of a "429" fault
    fault_rate: float = 0.0  # chance that a request without a scripted fault gets a random one
    random_fault_kinds: tuple[str, ...] = ("429", "500", "503")
    seed: int = 0  # seeds the random faults (read when the server is created)
    required_api_key: str | None = None  # when set, other keys get 401
    hang_s: float = 3600.0  # a "timeout" fault hangs this long (or until the server stops)
    model: str = "fake-model"
    # False: a request with `response_format` gets HTTP 400, as from a server without structured output.
    structured_output: bool = True
    record_last: int = 100  # request bodies kept in stats.bodies


@dataclass
class FakeStats:
    total: int = 0  # every request to /v1/chat/completions, faulted or not
    ok: int = 0  # answered 200 with a well-formed completion (including "empty")
    unauthorized: int = 0
    embedding_requests: int = 0  # every request to /v1/embeddings
    faults: collections.Counter = field(default_factory=collections.Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    # time.monotonic() of the latest requests (bounded: the CLI server may run for millions of them)
    arrivals: collections.deque = field(default_factory=lambda: collections.deque(maxlen=10_000))
    bodies: collections.deque = field(default_factory=lambda: collections.deque(maxlen=100))


def _words(text: object) -> int:
    return len(str(text).split()) if text else 0


def _bag_of_words(text: str, dims: int = 64) -> list[float]:
    vector = [0.0] * dims
    for word in text.lower().split():
        vector[int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little") % dims] += 1.0
    return vector


def _random_reply(messages: object) -> str:
    # Seeded by the conversation, so the same request always gets the same answer (reproducible runs).
    digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    sentences = []
    for _ in range(rng.randint(2, 5)):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(5, 12))]
        sentences.append(" ".join(words).capitalize() + ".")
    return " ".join(sentences)


def _error(status: int, message: str, kind: str, code: str | None = None, headers=None) -> web.Response:
    body = {"error": {"message": message, "type": kind, "code": code}}
    return web.json_response(body, status=status, headers=headers)


class FakeOpenAIServer:
    """The fake API in a background thread with its own event loop; ``port=0`` picks a free port."""

    def __init__(self, behavior: FakeBehavior | None = None, port: int = 0):
        self.behavior = behavior or FakeBehavior()
        self.stats = FakeStats(bodies=collections.deque(maxlen=self.behavior.record_last))
        self._port = port
        self._lock = threading.Lock()  # faults/replies are consumed from the loop and set from tests
        self._rng = random.Random(self.behavior.seed)
        self._reply_index = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self.port: int | None = None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("FakeOpenAIServer is not running: use it as a context manager or call start()")
        return f"http://127.0.0.1:{self.port}/v1"

    def add_faults(self, *kinds: str) -> None:
        with self._lock:
            self.behavior.faults.extend(kinds)

    # ---- request handling (runs on the server's loop) ----

    def _authorized(self, request: web.Request) -> bool:
        key = self.behavior.required_api_key
        return key is None or request.headers.get("Authorization") == f"Bearer {key}"

    def _next_fault(self) -> str | None:
        with self._lock:
            if self.behavior.faults:
                return self.behavior.faults.pop(0)
            if self.behavior.fault_rate and self._rng.random() < self.behavior.fault_rate:
                return self._rng.choice(self.behavior.random_fault_kinds)
        return None

    def _next_reply(self, messages: object) -> str:
        if self.behavior.reply_fn is not None:
            return self.behavior.reply_fn(messages)
        with self._lock:
            replies = self.behavior.replies
            if replies:
                reply = replies[self._reply_index % len(replies)]
                self._reply_index += 1
                return reply
        return _random_reply(messages)

    async def _models(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        model = {"id": self.behavior.model, "object": "model", "created": 0, "owned_by": "fake_openai"}
        return web.json_response({"object": "list", "data": [model]})

    async def _chat(self, request: web.Request) -> web.Response:
        stats = self.stats
        stats.total += 1
        stats.arrivals.append(time.monotonic())
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            return await self._answer(request)
        finally:  # also on cancellation, when the client gave up
            stats.in_flight -= 1

    async def _embeddings(self, request: web.Request) -> web.Response:
        self.stats.embedding_requests += 1
        if not self._authorized(request):
            return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        body = await request.json()
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return _error(400, "'input' must be a string or a list of strings", "invalid_request_error")
        fault = self._next_fault()
        if fault and fault.isdigit():
            self.stats.faults[fault] += 1
            return _error(int(fault), f"injected HTTP {fault} (fake)", "server_error")
        data = [{"object": "embedding", "index": i, "embedding": _bag_of_words(t)} for i, t in enumerate(texts)]
        tokens = sum(_words(t) for t in texts)
        return web.json_response({"object": "list", "data": data, "model": body.get("model") or self.behavior.model,
                                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def _answer(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            self.stats.unauthorized += 1
            return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "request body must be a JSON object with a 'messages' list",
                          "invalid_request_error")
        self.stats.bodies.append(body)
        if "response_format" in body and not self.behavior.structured_output:
            return _error(400, "response_format is not supported by this server (fake)", "invalid_request_error")
        fault = self._next_fault()
        if fault:
            self.stats.faults[fault] += 1
        if self.behavior.latency_s > 0:
            await asyncio.sleep(self.behavior.latency_s)
        if fault == "timeout":
            # Hang until the client gives up (it disconnects; handler cancellation ends us) or we stop.
            try:
                await asyncio.wait_for(self._stopping.wait(), self.behavior.hang_s)
            except asyncio.TimeoutError:
                pass
            return _error(504, "fake hang ended", "server_error")
        if fault == "malformed":
            return web.Response(status=200, text='{"id": "chatcmpl-broken", "choices": [{"index": 0,',
                                content_type="application/json")
        if fault == "429":
            headers = {"Retry-After": f"{self.behavior.retry_after_s:g}"}
            return _error(429, "Rate limit reached (fake).", "rate_limit_exceeded", "rate_limit_exceeded",
                          headers=headers)
        if fault and fault.isdigit():
            return _error(int(fault), f"injected HTTP {fault} (fake)",
                          "server_error" if fault.startswith("5") else "invalid_request_error")
        if fault and fault != "empty":
            logger.warning("unknown fault kind %r ignored (use an HTTP status or one of %s)", fault,
                           ", ".join(SPECIAL_FAULTS))
        return web.json_response(self._completion(body, empty=fault == "empty"))

    def _completion(self, body: dict, empty: bool) -> dict:
        messages = body["messages"]
        text, finish = ("" if empty else self._next_reply(messages)), "stop"
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(limit, int) and _words(text) > limit:
            text, finish = " ".join(text.split()[:limit]), "length"
        prompt = sum(_words(m.get("content")) for m in messages if isinstance(m, dict))
        completion = _words(text)
        self.stats.ok += 1
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model") or self.behavior.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion},
        }

    # ---- lifecycle ----

    async def _start_site(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        # handler_cancellation: a client that gives up ends its handler, so in_flight stays truthful.
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port)  # loopback only, on purpose
        await site.start()
        self.port = self._runner.addresses[0][1]

    def _run(self, started: threading.Event, failure: list) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start_site())
        except BaseException as err:  # e.g. port in use: reported by start() in the caller's thread
            failure.append(err)
            started.set()
            self._loop.close()
            return
        started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def start(self) -> "FakeOpenAIServer":
        if self._thread is not None:
            raise RuntimeError("FakeOpenAIServer already started")
        self._loop = asyncio.new_event_loop()
        started, failure = threading.Event(), []
        self._thread = threading.Thread(target=self._run, args=(started, failure), name="fake-openai", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise RuntimeError(f"fake OpenAI server could not listen on 127.0.0.1:{self._port}: {failure[0]}")
        logger.info("fake OpenAI server listening on %s", self.base_url)
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        # Release hanging "timeout" handlers first, so cleanup does not wait for them.
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if self._thread.is_alive():
            raise RuntimeError("fake OpenAI server thread did not stop within 10 s")
        self._thread = None
        self.port = None

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible server on 127.0.0.1 (tests, benchmarks)")
    parser.add_argument("--port", type=int, default=8011, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds of delay per request")
    parser.add_argument("--reply", action="append", help="scripted reply (repeatable, served round-robin)")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="share of requests given a random fault")
    parser.add_argument("--fault-kinds", default="429,500,503", help="comma-separated kinds of random faults")
    parser.add_argument("--retry-after", type=float, default=1.0, help="Retry-After seconds of 429 faults")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    parser.add_argument("--model", default="fake-model")
    parser.add_argument("--lists", action="store_true",
                        help="answer construction's 'Write N ...' prompts with N-item lists (devtools/fake_lists.py)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    reply_fn = None
    if args.lists:
        from ultrachat.devtools.fake_lists import list_reply as reply_fn
    behavior = FakeBehavior(latency_s=args.latency, replies=args.reply, reply_fn=reply_fn, fault_rate=args.fault_rate,
                            random_fault_kinds=tuple(k.strip() for k in args.fault_kinds.split(",") if k.strip()),
                            retry_after_s=args.retry_after, seed=args.seed, required_api_key=args.api_key,
                            model=args.model)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with FakeOpenAIServer(behavior, port=args.port) as server:
        try:
            done.wait()
        except KeyboardInterrupt:
            pass
        logger.info("stopping after %d requests (%d ok, faults %s)", server.stats.total, server.stats.ok,
                    dict(server.stats.faults))


if __name__ == "__main__":
    main()
