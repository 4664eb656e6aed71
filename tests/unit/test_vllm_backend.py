"""The vLLM backend's engine settings, its input path and its request trace, without starting an engine."""

import asyncio
import dataclasses
import json

import pytest

from ultrachat.config.chat import VllmBackend
from ultrachat.llm import vllm_backend


def backend_config(**engine_kwargs) -> VllmBackend:
    return VllmBackend(backend="vllm", model="tiny:tiny", engine_kwargs=engine_kwargs)


def test_prefix_caching_is_on_by_default_and_the_config_can_turn_it_off():
    from vllm import AsyncEngineArgs

    kwargs = vllm_backend.engine_kwargs(backend_config())
    assert kwargs["enable_prefix_caching"] is True
    assert set(kwargs) <= {field.name for field in dataclasses.fields(AsyncEngineArgs)}  # keys vLLM knows
    assert vllm_backend.engine_kwargs(backend_config(enable_prefix_caching=False))["enable_prefix_caching"] is False
    # The CPU settings still come on top of it (llm/vllm_cpu.py).
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        assert vllm_backend.engine_kwargs(backend_config(max_num_seqs=8)) == {
            "enforce_eager": True, "enable_prefix_caching": True, "max_num_seqs": 8, "enable_chunked_prefill": False}


@pytest.fixture(scope="module")
def renderer(tiny_model_dir):
    """vLLM's own renderer for the tiny model, as AsyncLLM builds it (no engine started)."""
    from vllm.config import ModelConfig, VllmConfig
    from vllm.renderers import renderer_from_config

    renderer = renderer_from_config(VllmConfig(model_config=ModelConfig(model=str(tiny_model_dir), max_model_len=512)))
    yield renderer
    renderer.shutdown()


def test_the_render_path_gives_exactly_the_token_ids_transformers_gives(renderer, tiny_model_dir):
    # The prompts must not change with the input path: same ids as apply_chat_template(tokenize=True),
    # the old path, for both roles' shapes (system + history; a last user turn with an appended note).
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    conversations = [
        [{"role": "user", "content": "What is a tide?"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a tide?"},
         {"role": "assistant", "content": "The rise and  fall\n\nof the sea."},
         {"role": "user", "content": "why?\n\n[Now you are the user again.]"}],
    ]
    for messages in conversations:
        engine_input = asyncio.run(vllm_backend.render(renderer, messages))
        assert engine_input["type"] == "token"  # an EngineInput: vLLM's current, non-deprecated form
        assert engine_input["prompt_token_ids"] == tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=False)


def test_a_rejected_role_fails_in_the_renderer(renderer):
    # The backend turns this into ChatError("chat_template"): the template raises for unknown roles.
    with pytest.raises(Exception, match="roles system, user, assistant"):
        asyncio.run(vllm_backend.render(renderer, [{"role": "tool", "content": "x"}]))


def test_the_trace_is_off_unless_asked_and_then_one_json_line_per_request(tmp_path, monkeypatch):
    monkeypatch.delenv(vllm_backend.TRACE_ENV, raising=False)
    assert vllm_backend._trace() is None
    path = tmp_path / "trace.jsonl"
    monkeypatch.setenv(vllm_backend.TRACE_ENV, str(path))
    trace = vllm_backend._trace()
    assert trace is vllm_backend._trace()  # one file handle per path in the process
    trace.write({"seed": 1, "prompt_token_ids": list(range(5000))})  # longer than a pipe's atomic write
    trace.write({"seed": 2, "prompt_token_ids": [7]})
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["seed"] for line in lines] == [1, 2] and len(lines[0]["prompt_token_ids"]) == 5000
    assert path.stat().st_mode & 0o777 == 0o600
