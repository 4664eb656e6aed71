"""Config of a chat model: which backend serves it (vLLM in-process or an OpenAI-compatible API) and
how it samples. Used by both dialogue roles and by opening-line construction."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field

from ultrachat.config.base import EnvVarName, ModelRef, Section


class Sampling(Section):
    temperature: float = Field(default=0.7, ge=0)
    top_p: float = Field(default=0.95, gt=0, le=1)
    max_tokens: int = Field(default=512, ge=1)
    # Set: every turn gets a seed derived from it, so a run can be reproduced. Costs speed on vLLM,
    # which samples seeded requests one by one (on CPU, chunked prefill is off: llm/vllm_cpu.py).
    seed: int | None = None


class VllmBackend(Section):
    """A vLLM AsyncLLM engine inside each generation actor (continuous batching across dialogues)."""

    backend: Literal["vllm"]
    model: ModelRef
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_model_len: int = Field(default=2048, ge=16)
    tensor_parallel_size: int = Field(default=1, ge=1)
    # Passed to vLLM's AsyncEngineArgs as is (e.g. gpu_memory_utilization, enforce_eager).
    engine_kwargs: dict[str, Any] = {}


class OpenAIBackend(Section):
    """Any OpenAI-compatible endpoint through the official `openai` async client."""

    backend: Literal["openai"]
    base_url: str = Field(min_length=1)
    model: str = Field(min_length=1)
    # The variable holding the key; null for a server without auth (a local `ultrachat serve` or vLLM).
    api_key_env: EnvVarName | None = "OPENAI_API_KEY"
    # Limits below are per generation actor: the cluster-wide rate is this times the actor count.
    # Requests in flight are also bounded by the dialogues in flight (actors.batches_in_flight x
    # actors.dialogues_per_batch); this cap is for endpoints that allow fewer.
    max_concurrency: int = Field(default=256, ge=1)
    timeout_s: float = Field(default=120, gt=0)
    max_retries: int = Field(default=6, ge=0)
    backoff_initial_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=60.0, gt=0)
    requests_per_minute: float | None = Field(default=None, gt=0)
    tokens_per_minute: float | None = Field(default=None, gt=0)


class InstantBackend(Section):
    """Answers at once, in process, with filler text (devtools/instant_backend.py): for measuring the
    platform's data plane and for tests. Never for data."""

    backend: Literal["instant"]
    model: str = "instant"
    reply_words: int = Field(default=24, ge=1)


ChatBackendConfig = Annotated[Union[VllmBackend, OpenAIBackend, InstantBackend], Field(discriminator="backend")]


class Role(Section):
    chat: ChatBackendConfig
    sampling: Sampling = Sampling()
    system_prompt: str | None = None
