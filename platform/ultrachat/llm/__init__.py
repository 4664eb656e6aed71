"""LLM backends for every stage that calls a model: one async chat interface (base.ChatBackend), on an
in-process vLLM engine or any OpenAI-compatible API, with client-side rate limits (rate_limit.py)."""

from __future__ import annotations

import sys

from ultrachat.config.chat import ChatBackendConfig
from ultrachat.llm.base import ChatBackend

# One rate limiter per endpoint, key and budget in this process (actor): when both roles call the same
# API, their requests draw on one RPM/TPM budget, as the provider counts them.
_LIMITERS: dict[tuple, object] = {}


def make_backend(config: ChatBackendConfig, resolved_model: str | None = None) -> ChatBackend:
    """``resolved_model``: for vLLM, the local dir / hub id ``resolve_model`` returned on the driver."""
    if config.backend == "vllm":
        from ultrachat.llm.vllm_backend import VllmChatBackend

        return VllmChatBackend(config, resolved_model or config.model)
    if config.backend == "instant":
        from ultrachat.devtools.instant_backend import InstantChatBackend

        return InstantChatBackend(config)
    from ultrachat.llm.openai_backend import OpenAIChatBackend
    from ultrachat.llm.rate_limit import RateLimiter

    key = (config.base_url, config.api_key_env, config.requests_per_minute, config.tokens_per_minute)
    if key not in _LIMITERS:
        _LIMITERS[key] = RateLimiter(config.requests_per_minute, config.tokens_per_minute)
    return OpenAIChatBackend(config, limiter=_LIMITERS[key])


def shutdown_engines() -> None:
    """Stop this process's vLLM engines, if any were started (an actor is exiting)."""
    module = sys.modules.get("ultrachat.llm.vllm_backend")
    if module is not None:
        module.shutdown_engines()
