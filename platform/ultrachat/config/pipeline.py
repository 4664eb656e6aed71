"""Config of the end-to-end pipeline: the stage sections, wired to each other.

Each section is the stage's own schema with the links filled in by the pipeline: training reads
the generate stage's dialogues unless ``train.data.paths`` names other data; the preferences stage
prompts with the generated dialogues' openings; dpo tunes the train stage's export on the preference
pairs; a served model without a ``source`` is the last training stage's export (``stage:train`` /
``stage:dpo`` name one); an evaluation endpoint without a ``base_url`` is the serve stage's app.
Stage outputs go under ``output_dir/<stage>``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from ultrachat.config.base import EnvVarName, ModelRef, Section
from ultrachat.config.chat import OpenAIBackend
from ultrachat.config.evaluation import Candidate, EvalJudge, EvaluateStage
from ultrachat.config.serving import ServedModel, ServedSource, ServeStage
from ultrachat.config.stats import StatsInput, StatsStage
from ultrachat.config.preferences import PreferencesStage, PromptSource
from ultrachat.config.training import TrainData, TrainStage, check_base_model
from ultrachat.storage import StoragePath

STAGES = ("generate", "stats", "train", "preferences", "dpo", "serve", "evaluate")
DEFAULT_STAGES = ("generate", "stats", "train", "serve")
Stage = Literal["generate", "stats", "train", "preferences", "dpo", "serve", "evaluate"]
# A served model's source may name a training stage's export (the default is the last one run).
StageExport = Literal["stage:train", "stage:dpo"]


class PipelineStatsInput(StatsInput):
    path: StoragePath | None = Field(default=None, description="default: the generate stage's dialogues")


class PipelineStats(StatsStage):
    input: PipelineStatsInput = PipelineStatsInput()
    tokenizer: ModelRef | None = Field(default=None, description="default: the generate stage's assistant model")


class PipelineTrainData(TrainData):
    paths: list[StoragePath] = Field(default=[], description="default: the generate stage's dialogues")


class PipelineTrain(TrainStage):
    data: PipelineTrainData = PipelineTrainData()


class PipelinePrompts(PromptSource):
    paths: list[StoragePath] = Field(default=[], description="default: the generate stage's dialogues")
    cut: Literal["first", "last", "random"] = "first"  # default: the dialogues' openings


class PipelinePreferences(PreferencesStage):
    prompts: PipelinePrompts = PipelinePrompts()


class PipelineDpo(TrainStage):
    """Preference tuning on top of the train stage's export (the Zephyr recipe's order: SFT, then DPO)."""

    model: Annotated[str, AfterValidator(check_base_model)] | None = Field(
        default=None, description="default: the train stage's export")
    data: PipelineTrainData = Field(default=PipelineTrainData(), description="default: the preferences stage's pairs")
    method: Literal["dpo"] = "dpo"


class PipelineModel(ServedModel):
    source: StageExport | ServedSource | None = Field(
        default=None, description="default: the last training stage's export (dpo, else train); stage:train or "
                                  "stage:dpo names one")


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
