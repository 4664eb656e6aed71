"""Building blocks of every config section."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from ultrachat.models.source import check_model_ref


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_env_var_name(value: str) -> str:
    # A config names the variable that holds a secret; the secret itself never enters a file or log.
    if not _ENV_VAR.match(value):
        raise ValueError(
            "expected the NAME of an environment variable (letters, digits, _), got a value that "
            "looks like a secret or a typo. Secrets never go in config files: export the key as "
            "e.g. OPENAI_API_KEY and write that name here"
        )
    return value


EnvVarName = Annotated[str, AfterValidator(_check_env_var_name)]
ModelRef = Annotated[str, AfterValidator(check_model_ref)]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class PoolResources(Section):
    """A Ray Data actor pool: its size and what each actor reserves."""

    min_actors: int = Field(default=1, ge=1)
    max_actors: int = Field(default=1, ge=1)
    num_cpus: float = Field(default=1, ge=0)
    num_gpus: float = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _ordered(self):
        if self.min_actors > self.max_actors:
            raise ValueError(f"min_actors ({self.min_actors}) must not exceed max_actors ({self.max_actors})")
        return self


class FailurePolicy(Section):
    """When a stage's failures stop the job, and how often Ray may retry what kills an actor."""

    # Stop early (status ``partial``, nonzero exit) once more than this share of the finished work
    # failed, and fail a run that ends above it: a RayJob's backoffLimit then re-runs it, and the
    # re-run retries the failures (retry_failed).
    max_failed_fraction: float = Field(default=0.05, ge=0, le=1)
    # The fraction is judged once this many items have finished; a smaller stage fails only if all
    # of its items failed (one bad reply in 3 calls is noise, not a broken endpoint).
    min_finished: int = Field(default=20, ge=1)
    # Failures caused by the input itself, which no retry fixes: kept as failed records, not counted.
    exempt_reasons: list[str] = ["prompt_too_long"]
    # A batch in flight when its actor died is run again, at most this many times in all; then its
    # rows are recorded as failed:actor_died with the reason, never retried forever.
    max_batch_attempts: int = Field(default=3, ge=1)
    # Restarts of one actor (a dead vLLM engine, OOM, a crash) before the stage fails.
    max_actor_restarts: int = Field(default=4, ge=0)


class LeaseSettings(Section):
    """The output dir's lease (output_lease.py): one live run per output_dir."""

    # Seconds without a renewal (every expiry_s/4) after which another run may take the lease over;
    # keep it well above the clock skew between hosts and the longest pause of the driver.
    expiry_s: float = Field(default=120, gt=0)
    # How long a new run watches a held lease before refusing: one left by a killed driver (a RayJob
    # retry on a new pod) expires within expiry_s and is taken over; a live holder's next renewal
    # (within expiry_s/4) refuses the new run at once. 0 refuses at first sight.
    wait_s: float = Field(default=150, ge=0)
    enabled: bool = True
