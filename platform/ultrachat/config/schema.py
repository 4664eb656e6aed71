"""The typed schema of every job's config: one pydantic model per job, the single source of truth.

Each job config is the shared job settings (``output_dir``, ``ray``, logging) plus its stage
section; the pipeline config nests the stage sections under their stage names. Generation,
training and serving fill in their stages in their own issues; what is here is validated today.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from ultrachat.config.base import LeaseSettings, LogLevel, Section
from ultrachat.config.evaluation import EvaluateStage
from ultrachat.config.generation import GenerateStage
from ultrachat.config.pipeline import (DEFAULT_STAGES, PipelineDpo, PipelineEvaluate, PipelinePreferences,
                                       PipelineServe, PipelineStats, PipelineTrain, Stage, check_stage_order)
from ultrachat.config.preferences import PreferencesStage
from ultrachat.config.serving import ServeStage
from ultrachat.config.stats import StatsStage
from ultrachat.config.training import TrainStage
from ultrachat.storage import StoragePath


class RaySettings(Section):
    """How the job reaches Ray. The cluster address comes from RAY_ADDRESS (set by `ray job submit`)."""

    namespace: str = "ultrachat"
    # Only used when no RAY_ADDRESS is set and the job starts a local Ray on 127.0.0.1.
    local_num_cpus: int | None = Field(default=None, ge=1)
    local_object_store_memory_gb: float | None = Field(default=None, gt=0)
    local_dashboard: bool = False
    # Ray starts workers at nice 15 so its control plane stays responsive; a node that only serves
    # can run them at 0, which matters when the engine shares few cores (docs/benchmarks.md).
    local_worker_niceness: int | None = Field(default=None, ge=0, le=19)
    # Ray's own switch: false keeps the workers' output (engine start-up, Ray Serve, teardown) in the
    # session's log files, named at start; the driver's progress, summary and errors still show.
    log_to_driver: bool = True
    # Ray Data's progress lines on the driver (the platform logs its own per stage with rates).
    data_progress: bool = True
    # Ray Data's read_parquet: "v2" (Ray 2.60's default) starts a pool of FooterReader actors (32 by
    # default) for every read, which costs 2-3 s per read of a small folder on 2 cores and over 10 s
    # when a stage's actors hold the CPUs; "v1" reads the same files in 0.15 s (docs/design.md). The
    # outputs here are a few compacted files per folder, where the footer pool buys nothing.
    parquet_reader: Literal["v1", "v2"] = "v1"


class JobSettings(Section):
    """Keys every job shares, at the top level of its config."""

    output_dir: StoragePath = Field(min_length=1, description="local path or pyarrow/fsspec URI (s3://, gs://)")
    run_name: str | None = Field(default=None, description="shown in the Ray dashboard and log lines")
    log_level: LogLevel = "INFO"
    ray: RaySettings = RaySettings()
    # The driver's lease on output_dir: a second run on the same dir is refused while this one lives.
    lease: LeaseSettings = LeaseSettings()

    def local_ray_env(self) -> dict[str, str]:
        """Environment a locally started Ray needs for this job (see ray_runtime.init_ray)."""
        return {}


# ---------------------------------------------------------------------------------- job configs


class GenerateConfig(JobSettings, GenerateStage):
    pass


class StatsConfig(JobSettings, StatsStage):
    pass


class TrainConfig(JobSettings, TrainStage):
    pass


class EvaluateConfig(JobSettings, EvaluateStage):
    pass


class PreferencesConfig(JobSettings, PreferencesStage):
    pass


class ServeConfig(JobSettings, ServeStage):
    local_ray_env = ServeStage.local_ray_env


class PipelineConfig(JobSettings):
    """generate -> stats -> train -> preferences -> dpo -> serve -> evaluate in one job; see
    config/pipeline.py for how the stages are linked."""

    stages: Annotated[list[Stage], AfterValidator(check_stage_order)] = Field(default=list(DEFAULT_STAGES),
                                                                              min_length=1)
    generate: GenerateStage
    stats: PipelineStats = PipelineStats()
    train: PipelineTrain
    serve: PipelineServe = PipelineServe()
    # UltraFeedback-style pairs and DPO on them, after SFT; run when listed in stages.
    preferences: PipelinePreferences | None = None
    dpo: PipelineDpo | None = None
    # The served models judged against each other; runs when "evaluate" is in stages.
    evaluate: PipelineEvaluate | None = None

    def local_ray_env(self) -> dict[str, str]:
        return self.serve.local_ray_env() if "serve" in self.stages else {}

    def stats_tokenizer(self) -> str | None:
        """The stats stage's tokenizer: its own, else the model the generate stage's assistant ran."""
        assistant = self.generate.assistant
        default = assistant.chat.model if assistant is not None and assistant.chat.backend == "vllm" else None
        return self.stats.tokenizer or default

    @model_validator(mode="after")
    def _linked(self):
        if "stats" in self.stages and self.stats.tokenizer is None and self.stats_tokenizer() is None:
            raise ValueError("stats.tokenizer: not set and the generate stage's assistant is not a vllm model to "
                             "default to; fix: set stats.tokenizer (an HF model dir, hub id or local:/tiny: ref)")
        trained = "train" in self.stages or "dpo" in self.stages
        if "serve" in self.stages and not trained and any(m.source is None for m in self.serve.models):
            raise ValueError("serve.models: a model without `source` serves the last training stage's export, but "
                             "neither train nor dpo is in stages; fix: keep train in stages (a finished run is "
                             "skipped) or set the source")
        problems = self._preference_problems()
        if "evaluate" in self.stages:
            problems += self._evaluate_problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _preference_problems(self) -> list[str]:
        problems = [f"{stage}: the {stage} stage is listed but has no section; add `{stage}:` (see "
                    f"configs/pipeline/local-dpo.yaml), or drop it from stages"
                    for stage in ("preferences", "dpo") if stage in self.stages and getattr(self, stage) is None]
        if "dpo" in self.stages and self.dpo is not None:
            if self.dpo.model is None and "train" not in self.stages:
                problems.append("dpo.model: unset means the train stage's export, but train is not in stages; fix: "
                                "keep train in stages (a finished run is skipped) or set dpo.model")
            if not self.dpo.data.paths and "preferences" not in self.stages:
                problems.append("dpo.data.paths: unset means the preferences stage's pairs, but preferences is not "
                                "in stages; fix: keep preferences in stages or set dpo.data.paths")
        if "serve" in self.stages:
            for i, model in enumerate(self.serve.models):
                stage = (model.source or "").removeprefix("stage:")
                if model.source in ("stage:train", "stage:dpo") and stage not in self.stages:
                    problems.append(f"serve.models[{i}].source: {model.source} names a stage not in stages; fix: add "
                                    f"{stage} to stages or give the model another source")
        return problems

    def _evaluate_problems(self) -> list[str]:
        if self.evaluate is None:
            return ["evaluate: the evaluate stage is listed but has no section; add `evaluate:` with candidates "
                    "and a judge (see configs/pipeline/local.yaml), or drop it from stages"]
        if "serve" in self.stages:
            names = [m.name for m in self.serve.models]
            return [f"{key}.chat.model: {chat.model!r} is not served by the serve stage (serve.models: {names}); "
                    f"fix: use one of those names or give the endpoint its own base_url"
                    for key, chat in self._evaluation_endpoints() if chat.base_url is None and chat.model not in names]
        served = [f"{key}.chat.base_url" for key, chat in self._evaluation_endpoints() if chat.base_url is None]
        return [f"{', '.join(served)}: unset means the serve stage's app, but serve is not in stages; fix: keep "
                f"serve in stages or give each endpoint its base_url"] if served else []

    def _evaluation_endpoints(self) -> list[tuple[str, object]]:
        return ([(f"evaluate.candidates[{i}]", c.chat) for i, c in enumerate(self.evaluate.candidates)]
                + [("evaluate.judge", self.evaluate.judge.chat)])


JOB_SCHEMAS: dict[str, type[JobSettings]] = {
    "generate": GenerateConfig,
    "stats": StatsConfig,
    "train": TrainConfig,
    "serve": ServeConfig,
    "evaluate": EvaluateConfig,
    "preferences": PreferencesConfig,
    "pipeline": PipelineConfig,
}


def schema_for_file(path: Path) -> type[JobSettings] | None:
    """The schema a file under configs/<job>/ follows, from its folder name."""
    return JOB_SCHEMAS.get(path.parent.name)
