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
            f"expected the NAME of an environment variable (letters, digits, _), got a value that "
            f"looks like a secret or a typo. Secrets never go in config files: export the key as "
            f"e.g. OPENAI_API_KEY and write that name here"
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
