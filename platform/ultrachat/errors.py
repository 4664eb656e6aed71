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


class PartialFailure(RuntimeError):
    """A stage finished part of its work and stopped (or ended) with more failures than its config
    allows. What succeeded is kept; a re-run retries the rest. ``counts`` is what got done."""

    def __init__(self, message: str, counts: dict | None = None):
        super().__init__(message)
        self.counts = counts or {}


def failure_reason(err: BaseException, limit: int = 1500) -> str:
    """One line: the innermost cause under Ray's wrappers (task errors, Ray Data's UserCodeException,
    Ray Train's worker failures), with our own message's fix when it has one."""
    seen = set()
    while id(err) not in seen:
        seen.add(id(err))
        inner = _unwrapped(err)
        if inner is None:
            break
        err = inner
    text = " ".join(str(err).split()) or type(err).__name__
    line = f"{type(err).__name__}: {text}"
    if len(line) <= limit:
        return line
    head = limit * 2 // 3  # our messages end with their fix: keep the end, cut the middle
    return f"{line[:head]} ... {line[-(limit - head - 5):]}"


def _unwrapped(err: BaseException) -> BaseException | None:
    failures = getattr(err, "worker_failures", None)  # Ray Train's WorkerGroupError: rank -> exception
    if failures:
        return next(iter(failures.values()))
    cause = getattr(err, "cause", None)  # ray.exceptions.RayTaskError
    if isinstance(cause, BaseException):
        return cause
    if type(err).__module__.startswith(("ray.", "ultrachat.")) and err.__cause__ is not None:
        return err.__cause__
    return None


class OutputDirBusy(RuntimeError):
    """Another live run holds the output dir's lease (output_lease.py); the message names the lease
    file, its holder and the fix."""
