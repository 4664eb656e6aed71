"""Config of opening-line construction: UltraChat's three sectors, built by LLM calls on Ray Data.

Counts default to the paper's (../shared/ultrachat-reference.md section 1); a sector left out (null)
is not built. Every fan-out count is "items per parent"; a parent asking for more than
``max_items_per_call`` items is asked in several calls, because a model asked for 200 items in one
reply truncates or repeats itself.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ultrachat.config.base import ModelRef, PoolResources, Section
from ultrachat.config.chat import Role
from ultrachat.storage import StoragePath


class CallPool(PoolResources):
    """The actors that make construction's LLM calls; each runs many calls at once."""

    calls_per_batch: int = Field(default=32, ge=1, description="Ray Data batch size (also the unit of resume)")
    batches_in_flight: int = Field(default=8, ge=1)


class InputFiles(Section):
    path: StoragePath = Field(
        min_length=1, description="a file or folder, local path or URI (s3://, gs://, file://)")
    format: Literal["auto", "jsonl", "parquet", "text"] = "auto"
    limit: int | None = Field(default=None, ge=1, description="use only the first N valid records")


class TopicBranch(Section):
    """Meta-topics -> subtopics -> questions -> further questions."""

    meta_topic_limit: int | None = Field(default=None, ge=1, description="only the first N meta-topics")
    subtopics_per_meta_topic: int = Field(default=30, ge=1)  # paper: 30-50
    questions_per_subtopic: int = Field(default=10, ge=1)
    further_questions_per_question: int = Field(default=10, ge=0)


class EntityBranch(Section):
    """Entities (one per record: `name`, optional `description`) -> meta-questions -> specific and
    extended questions. JSONL/Parquet records, or a .txt file with one name per line."""

    input: InputFiles
    meta_questions_per_entity: int = Field(default=5, ge=1)
    specific_per_meta_question: int = Field(default=10, ge=0)
    extended_per_meta_question: int = Field(default=20, ge=0)


class SectorI(Section):
    """Questions about the World. The target is split evenly between the branches, then evenly across
    meta-topics (entities), then subtopics (meta-questions)."""

    target: int = Field(ge=0, description="opening lines to sample (paper: ~500k)")
    topics: TopicBranch | None = TopicBranch()
    entities: EntityBranch | None = None

    @model_validator(mode="after")
    def _some_branch(self):
        if self.topics is None and self.entities is None:
            raise ValueError("both branches are off; fix: keep 'topics' or give 'entities.input.path'")
        return self


class SectorII(Section):
    """Creation and Generation: material types -> instructions -> a share refined by the LLM."""

    target: int = Field(ge=0)
    material_type_limit: int | None = Field(default=None, ge=1, description="only the first N material types")
    instructions_per_type: int = Field(default=200, ge=1)
    refine_fraction: float = Field(default=0.8, ge=0, le=1)


class SectorIII(Section):
    """Assistance on Existing Materials: C4-style pieces sorted by URL keywords -> instructions per
    piece -> joined with one of the paper's 7 templates."""

    target: int = Field(ge=0)
    corpus: InputFiles
    # Pieces whose URL matches no keyword: dropped (counted), or kept with material type "other".
    unmatched: Literal["drop", "other"] = "drop"
    pieces: int | None = Field(default=100_000, ge=1, description="pieces sampled evenly across types (paper: 100k)")
    instructions_per_piece: int = Field(default=5, ge=1)
    max_material_tokens: int = Field(default=1024, ge=16)
    # Counts tokens for the cut. None: the construction LLM's tokenizer when it is a vLLM model,
    # otherwise whitespace-separated words (an API model's tokenizer is not available offline).
    tokenizer: ModelRef | None = None
    templates: list[str] = Field(default=[], description="template ids to sample from; empty: all")


class NearDedup(Section):
    """Exact duplicates are always removed; these add near-duplicate removal."""

    normalized: bool = True  # same text after casefolding and stripping punctuation/whitespace
    minhash: bool = False  # MinHash LSH over word shingles (costs rows x bands x 8 bytes on the driver)
    num_perm: int = Field(default=64, ge=2)
    bands: int = Field(default=16, ge=1)
    shingle_words: int = Field(default=3, ge=1)

    @model_validator(mode="after")
    def _bands_divide(self):
        if self.num_perm % self.bands:
            raise ValueError(f"num_perm ({self.num_perm}) must be a multiple of bands ({self.bands})")
        return self


class Construction(Section):
    # The LLM that writes subtopics, questions and instructions (any chat backend, as for dialogues).
    llm: Role
    reference: StoragePath | None = Field(default=None, description="YAML replacing the packaged reference lists")
    prompts: dict[str, str] = Field(default={}, description="stage -> prompt template replacing the default")
    max_items_per_call: int = Field(default=20, ge=1)
    I: SectorI | None = None  # noqa: E741 (the paper's sector names)
    II: SectorII | None = None
    III: SectorIII | None = None
    dedup: NearDedup = NearDedup()
    actors: CallPool = CallPool()
    seed: int = 0
    # On a re-run, calls that failed (endpoint error, unparseable reply) are made again.
    retry_failed: bool = True

    @field_validator("prompts")
    @classmethod
    def _prompt_templates(cls, prompts: dict[str, str]) -> dict[str, str]:
        from ultrachat.construction.prompts import check_template

        problems = [f"prompts.{stage}: {p}" for stage, tpl in prompts.items() if (p := check_template(stage, tpl))]
        if problems:
            raise ValueError("; ".join(problems))
        return prompts

    @model_validator(mode="after")
    def _some_sector(self):
        if self.I is None and self.II is None and self.III is None:
            raise ValueError("no sector configured; fix: add at least one of I, II, III with a target")
        return self

