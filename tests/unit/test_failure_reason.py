"""The one-line reason every failed job prints: the innermost cause, its fix kept when long."""

from ultrachat.errors import failure_reason


class _TaskError(Exception):
    """Shaped like ray.exceptions.RayTaskError: the user's exception in ``.cause``."""

    def __init__(self, cause):
        super().__init__("ray task failed:\nTraceback ...\n  many lines")
        self.cause = cause


class _WorkerGroupError(Exception):
    """Shaped like Ray Train's WorkerGroupError: rank -> exception."""

    def __init__(self, failures):
        super().__init__("worker group failed")
        self.worker_failures = failures


def test_the_innermost_cause_on_one_line():
    inner = ValueError("bad row 7 in data.jsonl:\n  missing 'messages'. Fix: add it")
    reason = failure_reason(_WorkerGroupError({0: _TaskError(inner)}))
    assert reason == "ValueError: bad row 7 in data.jsonl: missing 'messages'. Fix: add it"


def test_a_long_reason_keeps_its_fix_at_the_end():
    reason = failure_reason(RuntimeError("x" * 5000 + " Fix: re-run the same command"), limit=300)
    assert len(reason) <= 300 and "\n" not in reason
    assert reason.startswith("RuntimeError: xxx") and reason.endswith("Fix: re-run the same command")
    assert " ... " in reason


def test_plain_builtin_errors_are_not_unwrapped_past_their_own_message():
    try:
        try:
            raise KeyError("inner detail")
        except KeyError as err:
            raise RuntimeError("what failed and the fix") from err
    except RuntimeError as err:
        assert failure_reason(err) == "RuntimeError: what failed and the fix"
