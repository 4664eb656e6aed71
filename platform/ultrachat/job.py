"""The contract every job follows, whatever it does.

``--config FILE`` plus ``a.b=value`` overrides -> validated config (all problems at once) -> logging
set up with the job's name -> resolved config saved under ``output_dir`` -> Ray initialised -> the
job's one library call -> a summary dict. The CLI prints that summary as the last stdout line.
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ultrachat import storage
from ultrachat.config import JobSettings, dump_yaml, load_config
from ultrachat.logs import setup_logging

logger = logging.getLogger(__name__)

RESOLVED_CONFIG_NAME = "resolved_config.yaml"

# job -> "module:function" taking (config) and returning its counts.
_RUNNERS: dict[str, str] = {
    "generate": "ultrachat.generation.run:run_generate",
    "train": "ultrachat.training.run:run_train",
    "serve": "ultrachat.serving.run:run_serve",
    "pipeline": "ultrachat.pipeline:run_pipeline",
}


@dataclass
class JobSummary:
    job: str
    status: str
    output: str | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0


def runner_for(job: str) -> Callable[[JobSettings], dict]:
    module, _, name = _RUNNERS[job].partition(":")
    return getattr(importlib.import_module(module), name)


def save_resolved(config: JobSettings, job: str, source: str) -> str:
    """Write the fully resolved config beside the job's outputs, so every run can be reproduced."""
    header = f"# resolved {job} config (from {source} plus overrides); re-run with --config this file\n"
    return storage.write_text(storage.join(config.output_dir, RESOLVED_CONFIG_NAME), header + dump_yaml(config))


def run_job(job: str, config_file: str, overrides: list[str]) -> JobSummary:
    """Run one job end to end; errors propagate to the caller (the CLI reports them)."""
    started = time.monotonic()
    config = load_config(job, config_file, overrides)
    setup_logging(config.log_level, job=f"{job}:{config.run_name or job}")
    logger.info("resolved config:\n%s", dump_yaml(config))
    run = runner_for(job)
    saved = save_resolved(config, job, config_file)
    logger.info("resolved config saved to %s", saved)
    from ultrachat.ray_runtime import init_ray

    init_ray(config.ray, job, config.run_name, config.local_ray_env())
    counts = run(config)
    return JobSummary(job, "succeeded", config.output_dir, counts, seconds=round(time.monotonic() - started, 1))
