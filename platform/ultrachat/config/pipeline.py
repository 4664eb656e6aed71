"""Config of the end-to-end pipeline: the stage sections, wired to each other.

Each section is the stage's own schema with the links filled in by the pipeline: training reads
the generate stage's dialogues unless ``train.data.paths`` names other data, a served model without
a ``source`` is the train stage's export, and an evaluation endpoint without a ``base_url`` is the
serve stage's app. Stage outputs go under ``output_dir/<stage>``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ultrachat.config.base import EnvVarName, ModelRef, Section
from ultrachat.config.chat import OpenAIBackend
from ultrachat.config.evaluation import Candidate, EvalJudge, EvaluateStage
from ultrachat.config.serving import ServedModel, ServedSource, ServeStage
from ultrachat.config.stats import StatsInput, StatsStage
from ultrachat.config.training import TrainData, TrainStage
from ultrachat.storage import StoragePath

STAGES = ("generate", "stats", "train", "serve", "evaluate")
DEFAULT_STAGES = ("generate", "stats", "train", "serve")
Stage = Literal["generate", "stats", "train", "serve", "evaluate"]


class PipelineStatsInput(StatsInput):
    path: StoragePath | None = Field(default=None, description="default: the generate stage's dialogues")


class PipelineStats(StatsStage):
    input: PipelineStatsInput = PipelineStatsInput()
    tokenizer: ModelRef | None = Field(default=None, description="default: the generate stage's assistant model")


class PipelineTrainData(TrainData):
    paths: list[StoragePath] = Field(default=[], description="default: the generate stage's dialogues")


class PipelineTrain(TrainStage):
    data: PipelineTrainData = PipelineTrainData()


class PipelineModel(ServedModel):
    source: ServedSource | None = Field(default=None, description="default: the train stage's export")


class ChatRequest(Section):
    """The request the pipeline sends the served model once it is up; its reply ends the run."""

    prompt: str = Field(default="What are three good ways to start learning a new language?", min_length=1)
    max_tokens: int = Field(default=64, ge=1)
    temperature: float = Field(default=0.7, ge=0)


class PipelineServe(ServeStage):
    models: list[PipelineModel] = Field(default=[PipelineModel(name="ultrallama")], min_length=1)
    chat: ChatRequest = ChatRequest()
    # false: after the reply the app is deleted and the run ends (the local demo); true: it keeps
    # serving, until Ctrl-C (detach: false) or on the cluster after the job exits (detach: true).
    keep_serving: bool = False


class PipelineEndpoint(OpenAIBackend):
    base_url: str | None = Field(default=None, min_length=1, description="default: the serve stage's app")
    # Default: none for the serve stage's app without auth; with serve.auth, the pipeline passes one
    # of its keys. Another endpoint needs its key's variable here.
    api_key_env: EnvVarName | None = None


class PipelineCandidate(Candidate):
    chat: PipelineEndpoint


class PipelineJudge(EvalJudge):
    chat: PipelineEndpoint


class PipelineEvaluate(EvaluateStage):
    """The served models (by the names serve.models gives them) judged against each other."""

    candidates: list[PipelineCandidate] = Field(min_length=1)
    judge: PipelineJudge


def check_stage_order(stages: list[str]) -> list[str]:
    """Stages run in the pipeline's order whatever order the config lists them in; no repeats."""
    repeated = sorted({s for s in stages if stages.count(s) > 1})
    if repeated:
        raise ValueError(f"{repeated} listed twice")
    return [s for s in STAGES if s in stages]
