"""The one async chat interface both roles use, whatever serves them (vLLM in-process or an API)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ultrachat.config.chat import Sampling


@dataclass(frozen=True)
class ChatResult:
    text: str
    finish_reason: str  # "stop", "length", ... as the OpenAI API / vLLM report it
    prompt_tokens: int
    completion_tokens: int
    model: str


class ChatError(RuntimeError):
    """A chat request that failed for good (after any retries). ``reason`` is short and stable, for
    the dialogue's ``failed:<reason>`` status; the message carries the details."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class BackendDeadError(RuntimeError):
    """The backend itself is gone (the vLLM engine process died): no request can succeed on it any more.
    Not a per-request failure: the actor holding it exits so that Ray restarts it with a fresh one."""


class PromptTooLongError(ChatError):
    def __init__(self, message: str):
        super().__init__("prompt_too_long", message)


class ChatBackend(Protocol):
    model_name: str

    async def chat(self, messages: list[dict[str, str]], sampling: Sampling) -> ChatResult:
        """Answer the conversation ``messages`` ([{role, content}, ...]) as the assistant."""
        ...

    async def close(self) -> None:
        ...
