"""vLLM's AsyncLLM engine living inside the generation actor.

Every dialogue in flight in the actor sends its turns to the same engine, so vLLM's continuous
batching does the batching. When the user and assistant roles name the same engine settings, they
share one engine (one copy of the weights, one KV cache).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

from ultrachat.config.chat import Sampling, VllmBackend
from ultrachat.llm.base import BackendDeadError, ChatError, ChatResult, PromptTooLongError
from ultrachat.llm.vllm_cpu import cpu_engine_kwargs

logger = logging.getLogger(__name__)


class _SharedEngine:
    """One AsyncLLM plus its tokenizer, shared by every backend in this process with equal settings."""

    def __init__(self, model_path: str, config: VllmBackend):
        from transformers import AutoTokenizer
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(
            model=model_path,
            dtype=config.dtype,
            max_model_len=config.max_model_len,
            tensor_parallel_size=config.tensor_parallel_size,
            **cpu_engine_kwargs(config.engine_kwargs, "engine_kwargs"),
        )
        logger.info("starting vLLM engine for %s (dtype %s, max_model_len %d, tp %d)", model_path,
                    config.dtype, config.max_model_len, config.tensor_parallel_size)
        self.engine = AsyncLLM.from_engine_args(args)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
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

    def _prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        try:
            return self._shared.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        except Exception as err:  # a template that rejects the roles/format: a clear reason
            raise ChatError("chat_template", f"{self.model_name}: chat template failed: {err}") from err

    async def chat(self, messages: list[dict[str, str]], sampling: Sampling) -> ChatResult:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.exceptions import EngineDeadError

        prompt_ids = self._prompt_ids(messages)
        room = self.config.max_model_len - len(prompt_ids)
        if room < 1:
            raise PromptTooLongError(
                f"prompt has {len(prompt_ids)} tokens; max_model_len of {self.model_name} is "
                f"{self.config.max_model_len}")
        # FINAL_ONLY: the loop is woken once per turn, not once per generated token.
        params = SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p,
                                max_tokens=min(sampling.max_tokens, room),
                                seed=sampling.seed,
                                output_kind=RequestOutputKind.FINAL_ONLY)
        final = None
        try:
            async for output in self._shared.engine.generate({"prompt_token_ids": prompt_ids}, params,
                                                             request_id=uuid.uuid4().hex):
                final = output
        except asyncio.CancelledError:
            raise
        except EngineDeadError as err:
            raise BackendDeadError(f"{self.model_name}: the vLLM engine died: {err}") from err
        except Exception as err:
            raise ChatError("engine_error", f"{self.model_name}: vLLM engine error: {err}") from err
        completion = final.outputs[0]
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
