"""vLLM's AsyncLLM engine living inside the generation actor.

Every dialogue in flight in the actor sends its turns to the same engine, so vLLM's continuous
batching does the batching. When the user and assistant roles name the same engine settings, they
share one engine (one copy of the weights, one KV cache).

What vLLM does for us per turn (nothing of it is our own engine code):
- the prompt goes through the engine's own renderer (``render_chat_async``), vLLM 0.32's current
  input path: the chat template is rendered and tokenized on the renderer's worker thread, off the
  actor's event loop, and the result is an ``EngineInput`` (the old ``{"prompt_token_ids": ...}``
  form is deprecated there);
- automatic prefix caching, on by default and stated explicitly (``engine_kwargs``): a dialogue's
  next turn repeats its previous prompt and answer, so only the new tokens are prefilled.

``ULTRACHAT_VLLM_TRACE=<file>`` appends one JSON line per request (prompt token ids, sampling, wall
times, prefix-cache hits) to that file: bench/generation.py replays them on raw vLLM and reads where
the time goes. Unset (the default), nothing is recorded.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import time
import uuid

from ultrachat.config.chat import Sampling, VllmBackend
from ultrachat.llm.base import BackendDeadError, ChatError, ChatResult, PromptTooLongError
from ultrachat.llm.vllm_cpu import cpu_engine_kwargs

logger = logging.getLogger(__name__)

PREFIX_CACHING = "enable_prefix_caching"
TRACE_ENV = "ULTRACHAT_VLLM_TRACE"


def engine_kwargs(config: VllmBackend) -> dict:
    """AsyncEngineArgs keyword arguments beyond model/dtype/lengths: the config's ``engine_kwargs``
    on top of the platform's defaults. Prefix caching is vLLM 0.32's default for generative models;
    it is stated here so that a changed vLLM default cannot silently make every turn prefill the
    whole conversation again. ``engine_kwargs: {enable_prefix_caching: false}`` still turns it off."""
    return cpu_engine_kwargs({PREFIX_CACHING: True, **config.engine_kwargs}, "engine_kwargs")


@functools.cache
def _render_params():
    from vllm.renderers import ChatParams, TokenizeParams

    # tokenize=True: the template renders and tokenizes in one step on the renderer's thread (as
    # transformers' apply_chat_template does), not in a second hop for tokenizing the text.
    chat = ChatParams(chat_template_kwargs={"add_generation_prompt": True, "tokenize": True})
    # No length limit here: chat() checks the prompt against max_model_len with its own error.
    return chat, TokenizeParams(max_total_tokens=None, add_special_tokens=False)


async def render(renderer, messages: list[dict[str, str]]) -> dict:
    """``messages`` as vLLM's EngineInput, by the engine's renderer (``AsyncLLM.renderer``); its
    ``prompt_token_ids`` are exactly transformers' ``apply_chat_template(..., tokenize=True)``."""
    chat, tokenize = _render_params()
    _, (engine_input,) = await renderer.render_chat_async([messages], chat, tokenize)
    return engine_input


class _SharedEngine:
    """One AsyncLLM, shared by every backend in this process with equal settings."""

    def __init__(self, model_path: str, config: VllmBackend):
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(
            model=model_path,
            dtype=config.dtype,
            max_model_len=config.max_model_len,
            tensor_parallel_size=config.tensor_parallel_size,
            **engine_kwargs(config),
        )
        logger.info("starting vLLM engine for %s (dtype %s, max_model_len %d, tp %d)", model_path,
                    config.dtype, config.max_model_len, config.tensor_parallel_size)
        self.engine = AsyncLLM.from_engine_args(args)
        self.users = 0

    def stop(self) -> None:
        """Shut the engine down without the ERROR traceback vLLM 0.32 logs on a clean stop: its
        ``shutdown`` kills the engine core first and cancels the output handler after, so the handler
        sees a dead engine and logs ``EngineDeadError``. Cancel the handler first, on its own loop."""
        engine, self.engine = self.engine, None
        if engine is None:
            return
        handler = getattr(engine, "output_handler", None)
        if handler is not None and not handler.done():
            loop = handler.get_loop()
            try:
                current = asyncio.get_running_loop()
            except RuntimeError:
                current = None
            if loop.is_running() and current is not loop:  # an async actor's loop runs in its own thread
                try:
                    asyncio.run_coroutine_threadsafe(_cancelled(handler), loop).result(timeout=10)
                except Exception as err:  # the loop is closing: shutdown below still stops the engine
                    logger.debug("could not cancel vLLM's output handler first: %s", err)
            else:
                handler.cancel()
        # vLLM's default 5 s before it SIGKILLs the engine core is shorter than a CPU worker's own
        # teardown on busy cores; killed, the worker leaves shared memory behind (tracker warnings).
        engine.shutdown(timeout=_STOP_TIMEOUT_S)


async def _cancelled(task: asyncio.Task) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


_ENGINES: dict[str, _SharedEngine] = {}
_STOP_TIMEOUT_S = 30.0


def _engine_key(model_path: str, config: VllmBackend) -> str:
    settings = config.model_dump(exclude={"backend", "model"})
    return json.dumps({"model": model_path, **settings}, sort_keys=True, default=str)


class _Trace:
    """The per-request record behind ``ULTRACHAT_VLLM_TRACE``. One ``os.write`` per line on an
    O_APPEND file, so lines from several actors sharing the file do not interleave."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def write(self, record: dict) -> None:
        os.write(self.fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())


_TRACES: dict[str, _Trace] = {}


def _trace() -> _Trace | None:
    path = os.environ.get(TRACE_ENV)
    if not path:
        return None
    if path not in _TRACES:
        _TRACES[path] = _Trace(path)
    return _TRACES[path]


def _structured(response_format: dict | None):
    if not response_format:
        return None
    from vllm.sampling_params import StructuredOutputsParams

    kind = response_format.get("type")
    if kind == "json_schema":
        return StructuredOutputsParams(json=response_format["json_schema"]["schema"])
    if kind == "json_object":
        return StructuredOutputsParams(json_object=True)
    raise ChatError("http_400", f"response_format type {kind!r} is not supported (json_schema, json_object)")


class VllmChatBackend:
    """ChatBackend on an in-process vLLM engine. ``model_path`` is the resolved local dir or hub id."""

    def __init__(self, config: VllmBackend, model_path: str):
        self.config = config
        self.model_name = config.model
        self._key = _engine_key(model_path, config)
        if self._key not in _ENGINES:
            _ENGINES[self._key] = _SharedEngine(model_path, config)
        self._shared = _ENGINES[self._key]
        self._shared.users += 1
        self._trace = _trace()

    async def _engine_input(self, messages: list[dict[str, str]]) -> dict:
        try:
            return await render(self._shared.engine.renderer, messages)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a template that rejects the roles/format: a clear reason
            raise ChatError("chat_template", f"{self.model_name}: chat template failed: {err}") from err

    async def chat(self, messages: list[dict[str, str]], sampling: Sampling,
                   response_format: dict | None = None) -> ChatResult:
        """``response_format``: OpenAI's ``{"type": "json_schema", "json_schema": {"schema": ...}}`` (or
        ``{"type": "json_object"}``), enforced by vLLM's structured outputs as its OpenAI server does."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.exceptions import EngineDeadError

        submitted = time.time()
        engine_input = await self._engine_input(messages)
        rendered = time.time()
        prompt_ids = engine_input["prompt_token_ids"]
        room = self.config.max_model_len - len(prompt_ids)
        if room < 1:
            raise PromptTooLongError(
                f"prompt has {len(prompt_ids)} tokens; max_model_len of {self.model_name} is "
                f"{self.config.max_model_len}")
        # FINAL_ONLY: the loop is woken once per turn, not once per generated token.
        params = SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p,
                                max_tokens=min(sampling.max_tokens, room),
                                seed=sampling.seed,
                                structured_outputs=_structured(response_format),
                                output_kind=RequestOutputKind.FINAL_ONLY)
        final = None
        try:
            async for output in self._shared.engine.generate(engine_input, params, request_id=uuid.uuid4().hex):
                final = output
        except asyncio.CancelledError:
            raise
        except EngineDeadError as err:
            raise BackendDeadError(f"{self.model_name}: the vLLM engine died: {err}") from err
        except Exception as err:
            raise ChatError("engine_error", f"{self.model_name}: vLLM engine error: {err}") from err
        completion = final.outputs[0]
        if self._trace is not None:
            self._trace.write({
                "model": self.model_name, "submitted": submitted, "rendered": rendered, "done": time.time(),
                "seed": params.seed, "temperature": params.temperature, "top_p": params.top_p,
                "max_tokens": params.max_tokens, "prompt_token_ids": list(prompt_ids),
                "completion_tokens": len(completion.token_ids), "cached_tokens": final.num_cached_tokens,
                "finish_reason": completion.finish_reason})
        return ChatResult(completion.text, completion.finish_reason or "stop", len(prompt_ids),
                          len(completion.token_ids), self.model_name)

    async def close(self) -> None:
        self._shared.users -= 1
        if self._shared.users == 0 and _ENGINES.pop(self._key, None) is not None:
            self._shared.stop()


def shutdown_engines() -> None:
    """Stop every engine of this process (the actor is exiting; its event loop may be gone)."""
    while _ENGINES:
        _, shared = _ENGINES.popitem()
        shared.stop()
