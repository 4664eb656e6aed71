"""Tiny local models: offline, deterministic, LLaMA architecture, UltraChat chat template."""

import hashlib
import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from ultrachat.models.tiny import SIZES, build_tiny_model

DIALOGUE = [
    {"role": "user", "content": "What is a comet?"},
    {"role": "assistant", "content": "A ball of ice and dust."},
    {"role": "user", "content": "Where do they come from?"},
    {"role": "assistant", "content": "Mostly the Oort cloud."},
]


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_size_has_head_dim_vllm_cpu_accepts():
    assert all(spec.head_dim >= 32 for spec in SIZES.values())
    assert SIZES["small"].hidden_size >= 256 and SIZES["small"].num_layers >= 4


def test_saved_in_hugging_face_format(tiny_model_dir):
    names = {p.name for p in tiny_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json"} <= names
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["head_dim"] >= 32


def test_tokenizer_is_fast_with_special_tokens_and_ultrachat_template(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tokenizer.is_fast
    ids = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
    assert None not in ids and len(ids) == 3
    text = tokenizer.apply_chat_template(DIALOGUE, tokenize=False)
    assert text == ("<s>User: What is a comet?</s>\nAssistant: A ball of ice and dust.</s>\n"
                    "User: Where do they come from?</s>\nAssistant: Mostly the Oort cloud.</s>\n")
    prompt = tokenizer.apply_chat_template(DIALOGUE[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("</s>\nAssistant: ")
    assert tokenizer("hello").input_ids[0] == tokenizer.bos_token_id


def test_generation_marks_exactly_the_assistant_spans(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    out = tokenizer.apply_chat_template(DIALOGUE, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    marked = [t for t, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert tokenizer.decode(marked) == "A ball of ice and dust.</s>Mostly the Oort cloud.</s>"


def test_loads_with_transformers(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.model_type == "llama"


def test_build_is_deterministic_per_seed(tmp_path):
    a = build_tiny_model(tmp_path / "a", size="tiny", seed=7)
    b = build_tiny_model(tmp_path / "b", size="tiny", seed=7)
    c = build_tiny_model(tmp_path / "c", size="tiny", seed=8)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert digest(a / name) == digest(b / name), name
    assert digest(a / "model.safetensors") != digest(c / "model.safetensors")


def test_small_model_greedy_output_is_varied_text(small_model_dir):
    import torch

    tokenizer = AutoTokenizer.from_pretrained(small_model_dir)
    model = AutoModelForCausalLM.from_pretrained(small_model_dir)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "How can I start running?"}],
                                           tokenize=True, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=40, do_sample=False)
    new = out[0, prompt["input_ids"].shape[1]:].tolist()
    assert len(set(new)) >= 8, tokenizer.decode(new)


@pytest.mark.parametrize("size", ["huge"])
def test_unknown_size_is_refused(tmp_path, size):
    with pytest.raises(ValueError, match="unknown tiny model size"):
        build_tiny_model(tmp_path / "x", size=size)
