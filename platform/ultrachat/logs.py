"""Logging for drivers, actors and training workers: every line says which job and which process.

Ray already prefixes forwarded worker output with ``(ActorClass pid=N)``; our own prefix adds the
job/run and the role inside it (``driver``, ``rank=3``, ``actor=DialogueWorker``), so lines stay
recognisable in ``ray job logs``, the dashboard and a plain terminal alike.
"""

from __future__ import annotations

import logging
import sys

_HANDLER_NAME = "ultrachat"
_FORMAT = "%(asctime)s %(levelname)s [%(ultrachat_context)s] %(name)s: %(message)s"


class _ContextFilter(logging.Filter):
    def __init__(self, context: str):
        super().__init__()
        self.context = context

    def filter(self, record: logging.LogRecord) -> bool:
        record.ultrachat_context = self.context
        return True


def setup_logging(level: str = "INFO", job: str | None = None, role: str = "driver") -> None:
    """Configure the root logger once per process (calling again replaces our handler)."""
    context = f"{job} {role}" if job else role
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    # stderr, because stdout's last line is the job's JSON summary.
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
    handler.addFilter(_ContextFilter(context))
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("ultrachat").setLevel(level)
    # The openai client's HTTP library logs every request at INFO: millions of lines in a real run.
    for chatty in ("httpx", "httpx2"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLevelName(level)))
