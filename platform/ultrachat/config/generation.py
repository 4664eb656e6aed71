"""Config of the generation stage: two chat roles, the opening lines, the simulation and filters."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, model_validator

from ultrachat.config.base import EnvVarName, ModelRef, Section

SECTORS = ("I", "II", "III")


class Sampling(Section):
    temperature: float = Field(default=0.7, ge=0)
    top_p: float = Field(default=0.95, gt=0, le=1)
    max_tokens: int = Field(default=512, ge=1)
    # Set: every turn gets a seed derived from it, so a run can be reproduced. Costs speed on vLLM,
    # which samples seeded requests one by one.
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
    api_key_env: EnvVarName = "OPENAI_API_KEY"
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


ChatBackendConfig = Annotated[Union[VllmBackend, OpenAIBackend], Field(discriminator="backend")]


class Role(Section):
    chat: ChatBackendConfig
    sampling: Sampling = Sampling()
    system_prompt: str | None = None


class OpeningsInput(Section):
    path: str = Field(min_length=1, description="JSONL or Parquet file or folder, local path or URI")
    format: Literal["auto", "jsonl", "parquet"] = "auto"
    limit: int | None = Field(default=None, ge=1, description="use only the first N valid openings")


class RoundRange(Section):
    min: int = Field(ge=1)
    max: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "RoundRange":
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


class Rounds(Section):
    """Rounds (user + assistant turn pairs) per dialogue, sampled uniformly per sector (the paper's)."""

    I: RoundRange = RoundRange(min=3, max=7)  # noqa: E741 (the paper's sector names)
    II: RoundRange = RoundRange(min=2, max=4)
    III: RoundRange = RoundRange(min=2, max=4)


class Filters(Section):
    """Post-processing filters; each can be switched off. Patterns are case-insensitive regexes."""

    user_role_slip: bool = True
    polite_closing: bool = True
    assistant_disclaimer: bool = True
    empty_turn: bool = True
    length_cut: bool = True
    repetition: bool = True
    # Extra patterns added to the built-in ones (see ultrachat/generation/filters.py).
    user_role_slip_patterns: list[str] = []
    polite_closing_patterns: list[str] = []
    assistant_disclaimer_patterns: list[str] = []
    # A turn is degenerate when one n-gram covers more than this share of its tokens.
    repetition_max_share: float = Field(default=0.5, gt=0, le=1)


class ActorPool(Section):
    """The Ray Data actor pool that runs dialogues; each actor runs many dialogues at once."""

    min_actors: int = Field(default=1, ge=1)
    max_actors: int = Field(default=1, ge=1)
    num_cpus: float = Field(default=1, ge=0)
    num_gpus: float = Field(default=0, ge=0)
    # A batch is also a shard and the unit of resume; it returns when its slowest dialogue ends, so
    # small batches with many in flight keep an actor busy when round counts vary.
    dialogues_per_batch: int = Field(default=16, ge=1, description="Ray Data batch size")
    # Batches each actor works on at once; with dialogues_per_batch this bounds dialogues in flight.
    batches_in_flight: int = Field(default=8, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "ActorPool":
        if self.min_actors > self.max_actors:
            raise ValueError(f"min_actors ({self.min_actors}) must not exceed max_actors ({self.max_actors})")
        return self


class GenerateStage(Section):
    openings: OpeningsInput
    user: Role
    assistant: Role
    rounds: Rounds = Rounds()
    # Personas of the simulated user; empty means the built-in list (ultrachat/generation/prompts.py).
    personas: list[str] = []
    filters: Filters = Filters()
    actors: ActorPool = ActorPool()
    seed: int = 0
    # On a re-run, dialogues that failed (endpoint down, engine error...) run again and their old
    # failed records are replaced; false keeps failures as final.
    retry_failed: bool = True
    export_jsonl: bool = True
