"""The contract every job follows, whatever it does.

``--config FILE`` plus ``a.b=value`` overrides -> validated config (all problems at once) -> logging
set up with the job's name -> resolved config saved under ``output_dir`` -> Ray initialised -> the
job's one library call -> a summary. The CLI prints that summary as the last stdout line.

Whatever fails (the config, an input, Ray, Ray Train, an engine, the storage), the job ends the same
way: a one-line reason (with the fix where there is one) in the summary and the log, a status and an
exit code a RayJob's ``backoffLimit`` or a script can act on, and Ray shut down.
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ultrachat import storage
from ultrachat.output_lease import hold_output_dir
from ultrachat.config import JobSettings, dump_yaml, load_config
from ultrachat.errors import ConfigError, InputError, OutputDirBusy, PartialFailure, failure_reason
from ultrachat.logs import setup_logging

logger = logging.getLogger(__name__)

RESOLVED_CONFIG_NAME = "resolved_config.yaml"

# job -> "module:function" taking (config) and returning its counts.
_RUNNERS: dict[str, str] = {
    "generate": "ultrachat.generate:run_generate",
    "stats": "ultrachat.stats.run:run_stats",
    "train": "ultrachat.training.run:run_train",
    "serve": "ultrachat.serving.run:run_serve",
    "evaluate": "ultrachat.evaluation.run:run_evaluate",
    "preferences": "ultrachat.preferences.run:run_preferences",
    "pipeline": "ultrachat.pipeline:run_pipeline",
}


# Exit codes: 1 the work failed, 2 the user's input is wrong (re-running the same will not help),
# 3 partial (some work failed beyond failures.max_failed_fraction; a re-run retries it), 130 interrupted.
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_PARTIAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


@dataclass
class JobSummary:
    job: str
    status: str
    output: str | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    # The Ray cluster the job ran on: address, resources, auth mode (and a warning when it is off).
    ray: dict[str, Any] = field(default_factory=dict)


def runner_for(job: str) -> Callable[[JobSettings], dict]:
    module, _, name = _RUNNERS[job].partition(":")
    return getattr(importlib.import_module(module), name)


def save_resolved(config: JobSettings, job: str, source: str) -> str:
    """Write the fully resolved config beside the job's outputs, so every run can be reproduced."""
    header = f"# resolved {job} config (from {source} plus overrides); re-run with --config this file\n"
    return storage.write_text(storage.join(config.output_dir, RESOLVED_CONFIG_NAME), header + dump_yaml(config))


def run_job(job: str, config_file: str, overrides: list[str]) -> tuple[JobSummary, int]:
    """Run one job end to end; never raises: every outcome is a summary and an exit code."""
    from ultrachat.ray_runtime import shutdown_ray

    started = time.monotonic()
    summary = JobSummary(job, "failed")
    try:
        code = _run(job, config_file, overrides, summary)
    except ConfigError as err:
        code = _failed(summary, "invalid_config", str(err), EXIT_BAD_INPUT)
    except (InputError, OutputDirBusy) as err:
        code = _failed(summary, "bad_input", str(err), EXIT_BAD_INPUT)
    except PartialFailure as err:
        summary.counts = err.counts
        code = _failed(summary, "partial", str(err), EXIT_PARTIAL)
    except KeyboardInterrupt:
        code = _failed(summary, "interrupted", "interrupted (Ctrl-C or SIGINT); re-run the same command to "
                                               "finish the rest", EXIT_INTERRUPTED)
    except Exception as err:  # Ray, Ray Train, vLLM, storage, our own bugs: all end the same way
        # Our own errors carry their fix; anything else gets its traceback in the log for a bug report.
        logger.error("%s job failed", job, exc_info=not isinstance(err, (ValueError, RuntimeError, OSError)))
        code = _failed(summary, "failed", failure_reason(err), EXIT_FAILED)
    finally:
        try:
            shutdown_ray()
        except Exception as err:  # the summary must still be printed
            logger.warning("Ray shutdown failed: %s", err)
    summary.seconds = round(time.monotonic() - started, 1)
    return summary, code


def _run(job: str, config_file: str, overrides: list[str], summary: JobSummary) -> int:
    config = load_config(job, config_file, overrides)
    summary.output = config.output_dir
    setup_logging(config.log_level, job=f"{job}:{config.run_name or job}")
    # A quiet terminal (ray.log_to_driver=false) gets the saved file's path only, logged below.
    logger.log(logging.INFO if config.ray.log_to_driver else logging.DEBUG, "resolved config:\n%s",
               dump_yaml(config))
    run = runner_for(job)
    with hold_output_dir(config.output_dir, job, config.lease):
        saved = save_resolved(config, job, config_file)
        logger.info("resolved config saved to %s", saved)
        from ultrachat.ray_runtime import init_ray

        summary.ray = init_ray(config.ray, job, config.run_name, config.local_ray_env())
        summary.counts = run(config)
    summary.status = "succeeded"
    return EXIT_OK


def _failed(summary: JobSummary, status: str, reason: str, code: int) -> int:
    logger.error("%s", reason)
    summary.status, summary.error = status, reason
    return code
