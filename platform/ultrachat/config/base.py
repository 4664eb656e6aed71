"""Building blocks of every config section."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict

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
