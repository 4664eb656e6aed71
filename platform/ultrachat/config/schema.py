"""The typed schema of every job's config: one pydantic model per job, the single source of truth.

Each job config is the shared job settings (``output_dir``, ``ray``, logging) plus its stage
section; the pipeline config nests the stage sections under their stage names. Generation,
training and serving fill in their stages in their own issues; what is here is validated today.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from ultrachat.config.base import LogLevel, Section
from ultrachat.config.generation import GenerateStage
from ultrachat.config.serving import ServeStage
from ultrachat.config.training import TrainStage


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


class JobSettings(Section):
    """Keys every job shares, at the top level of its config."""

    output_dir: str = Field(min_length=1, description="local path or pyarrow/fsspec URI (s3://, gs://)")
    run_name: str | None = Field(default=None, description="shown in the Ray dashboard and log lines")
    log_level: LogLevel = "INFO"
    ray: RaySettings = RaySettings()

    def local_ray_env(self) -> dict[str, str]:
        """Environment a locally started Ray needs for this job (see ray_runtime.init_ray)."""
        return {}


# ---------------------------------------------------------------------------------- job configs


class GenerateConfig(JobSettings, GenerateStage):
    pass


class TrainConfig(JobSettings, TrainStage):
    pass


class ServeConfig(JobSettings, ServeStage):
    local_ray_env = ServeStage.local_ray_env


class PipelineServe(Section):
    """Serving inside the pipeline: the model is the train stage's export, so no source is given."""

    name: str = Field(default="ultrallama", min_length=1)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_model_len: int = Field(default=2048, ge=16)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)


class PipelineConfig(JobSettings):
    generate: GenerateStage
    train: TrainStage
    serve: PipelineServe = PipelineServe()


JOB_SCHEMAS: dict[str, type[JobSettings]] = {
    "generate": GenerateConfig,
    "train": TrainConfig,
    "serve": ServeConfig,
    "pipeline": PipelineConfig,
}


def schema_for_file(path: Path) -> type[JobSettings] | None:
    """The schema a file under configs/<job>/ follows, from its folder name."""
    return JOB_SCHEMAS.get(path.parent.name)
