"""The instant backend (data-plane measurements, tests) through the same config and factory as the
real backends."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from ultrachat.config.chat import Role, Sampling
from ultrachat.config.generation import OutputFiles
from ultrachat.llm import make_backend


def test_an_instant_role_answers_at_once_with_varied_text():
    role = Role.model_validate({"chat": {"backend": "instant", "reply_words": 12}})
    backend = make_backend(role.chat)
    history = [{"role": "user", "content": "How do tides work?"}]
    first = asyncio.run(backend.chat(history, Sampling(max_tokens=8)))
    second = asyncio.run(backend.chat(history + [{"role": "assistant", "content": first.text}], Sampling()))
    assert first.completion_tokens == 8 and len(first.text.split()) == 8 and first.text.endswith(".")
    assert second.text.endswith("?") and second.text != first.text and second.prompt_tokens > first.prompt_tokens
    assert first.model == "instant" and first.finish_reason == "stop"


def test_output_file_targets_are_validated():
    assert OutputFiles().rows_per_file == 100_000 and OutputFiles().mb_per_file == 256
    with pytest.raises(ValidationError, match="rows_per_file"):
        OutputFiles(rows_per_file=0)
    with pytest.raises(ValidationError, match="row_per_file"):
        OutputFiles.model_validate({"row_per_file": 10})
