"""Error types shared by every job: each message names what is wrong and how to fix it."""


class ConfigError(ValueError):
    """A config file or override is invalid. Carries every problem found, not just the first."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
        body = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {count}:\n{body}")


class InputError(ValueError):
    """A data input (a file, a folder of records) is missing or holds nothing usable: the user's to fix,
    reported without a traceback and with exit code 2, before any paid work."""


class ModelSourceError(ValueError):
    """A model reference that cannot be loaded (missing dir, not a Hugging Face model, offline hub id)."""

