"""Chat backends: one async interface (base.ChatBackend), vLLM in-process or any OpenAI-compatible API."""

from __future__ import annotations

from ultrachat.config.generation import ChatBackendConfig
from ultrachat.generation.backends.base import ChatBackend


def make_backend(config: ChatBackendConfig, resolved_model: str | None = None) -> ChatBackend:
    """``resolved_model``: for vLLM, the local dir / hub id ``resolve_model`` returned on the driver."""
    if config.backend == "vllm":
        from ultrachat.generation.backends.vllm_backend import VllmChatBackend

        return VllmChatBackend(config, resolved_model or config.model)
    from ultrachat.generation.backends.openai_backend import OpenAIChatBackend

    return OpenAIChatBackend(config)
