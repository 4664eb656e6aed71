"""Config of the generation stage: two chat roles, the opening lines, the simulation and filters."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ultrachat.config.base import FailurePolicy, PoolResources, Section
from ultrachat.config.chat import Role
from ultrachat.config.construction import Construction
from ultrachat.storage import StoragePath

SECTORS = ("I", "II", "III")


class OpeningsInput(Section):
    path: StoragePath = Field(
        min_length=1, description="JSONL or Parquet file or folder, local path or URI (s3://, gs://, file://)")
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
    # ultrachat_200k's cleanups. truecase: capitalize sentence starts and the pronoun "i" in generated
    # turns (recorded as rewritten:truecase). feelings_disclaimer: an assistant turn claiming to have no
    # emotions or opinions
    # ("I don't have personal opinions"): trim = cut the dialogue before that round (earlier rounds stay),
    # drop = drop the dialogue (ultrachat_200k's rule), off = keep it.
    truecase: bool = True
    feelings_disclaimer: Literal["trim", "drop", "off"] = "trim"
    feelings_disclaimer_patterns: list[str] = []
    # Extra patterns added to the built-in ones (see ultrachat/generation/filters.py).
    user_role_slip_patterns: list[str] = []
    polite_closing_patterns: list[str] = []
    assistant_disclaimer_patterns: list[str] = []
    # A turn is degenerate when one n-gram covers more than this share of its tokens.
    repetition_max_share: float = Field(default=0.5, gt=0, le=1)


class ActorPool(PoolResources):
    """The Ray Data actor pool that runs dialogues; each actor runs many dialogues at once."""

    # A batch is also a shard and the unit of resume (a kill loses the batches in flight).
    dialogues_per_batch: int = Field(default=16, ge=1, description="Ray Data batch size")
    # Dialogues in flight per actor = batches_in_flight x dialogues_per_batch. Twice as many batches
    # are admitted, so a finished dialogue's slot goes to the next batch's at once (stages/pool.py).
    batches_in_flight: int = Field(default=8, ge=1)


class OutputFiles(Section):
    """The dialogues' final Parquet files: the per-batch shards are compacted into files of at most
    this many rows or megabytes (the paper's 1.47M dialogues: 15 files at the defaults)."""

    rows_per_file: int = Field(default=100_000, ge=1)
    mb_per_file: float = Field(default=256, gt=0)


Stage = Literal["construct", "dialogues"]


class GenerateStage(Section):
    """Two stages: ``construct`` builds opening lines (section ``construction``), ``dialogues`` simulates
    a dialogue from each (roles ``user`` and ``assistant``), reading ``openings.path`` or, when that is
    not given, the openings ``construct`` wrote under output_dir (this run's or an earlier one's)."""

    # Default: construct when a construction section is given, and dialogues when roles are given.
    stages: list[Stage] | None = None
    openings: OpeningsInput | None = None
    construction: Construction | None = None
    user: Role | None = None
    assistant: Role | None = None
    rounds: Rounds = Rounds()
    # Personas of the simulated user; empty means the built-in list (ultrachat/generation/prompts.py).
    personas: list[str] = []
    filters: Filters = Filters()
    actors: ActorPool = ActorPool()
    # For both stages (construction calls and dialogues).
    failures: FailurePolicy = FailurePolicy()
    seed: int = 0
    # On a re-run, dialogues that failed (endpoint down, engine error...) run again and their old
    # failed records are replaced; false keeps failures as final.
    retry_failed: bool = True
    output_files: OutputFiles = OutputFiles()
    # A JSON lines twin of each data file (written once per file) under output_dir/dialogues_jsonl.
    export_jsonl: bool = True
    # Plan only: log and return the LLM calls and opening lines each stage would make; call nothing.
    dry_run: bool = False

    @property
    def run_stages(self) -> list[str]:
        if self.stages is not None:
            return list(dict.fromkeys(self.stages))
        return [s for s, on in (("construct", self.construction is not None),
                                ("dialogues", self.user is not None or self.assistant is not None)) if on]

    @model_validator(mode="after")
    def _stages_have_their_sections(self) -> "GenerateStage":
        stages, problems = self.run_stages, []
        if not stages:
            problems.append("nothing to run; fix: give a 'construction' section (build opening lines) and/or "
                            "'user' and 'assistant' roles (simulate dialogues)")
        if "construct" in stages and self.construction is None:
            problems.append("stages includes 'construct' but there is no 'construction' section; fix: add it "
                            "(see configs/generate/local.yaml)")
        if "construct" in stages and self.openings is not None:
            problems.append("'openings' is given and 'construct' runs: the dialogues would not use the built "
                            "openings; fix: remove 'openings' or set stages: [dialogues]")
        if "dialogues" in stages:
            problems += [f"stages includes 'dialogues' but '{role}' is missing; fix: add the {role} role "
                         f"(chat backend and sampling)" for role in ("user", "assistant") if getattr(self, role) is None]
            if self.openings is None and self.construction is None:
                problems.append("the dialogues need opening lines; fix: give 'openings.path' or a 'construction' "
                                "section")
        if problems:
            raise ValueError("; ".join(problems))
        return self
