"""The training chat template: the model's when it marks assistant turns, else UltraChat's, or a clear error."""

import pytest

from ultrachat.models.chat_template import ULTRACHAT_CHAT_TEMPLATE, ZEPHYR_CHAT_TEMPLATE
from ultrachat.training.template import resolve_chat_template

PLAIN = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"


class Tok:
    def __init__(self, template):
        self.chat_template = template


@pytest.mark.parametrize("template, mode, expected, origin", [
    (ULTRACHAT_CHAT_TEMPLATE, "auto", ULTRACHAT_CHAT_TEMPLATE, "model"),
    (None, "auto", ULTRACHAT_CHAT_TEMPLATE, "ultrachat (the model has no chat template)"),
    (PLAIN, "auto", ULTRACHAT_CHAT_TEMPLATE, "ultrachat (the model's own template has no {% generation %} markers)"),
    (PLAIN, "ultrachat", ULTRACHAT_CHAT_TEMPLATE, "ultrachat"),
    (ULTRACHAT_CHAT_TEMPLATE, "zephyr", ZEPHYR_CHAT_TEMPLATE, "zephyr"),
])
def test_choice(template, mode, expected, origin):
    assert resolve_chat_template(Tok(template), mode, "m") == (expected, origin)


@pytest.mark.parametrize("template, problem", [(None, "has no chat template"),
                                               (PLAIN, "without {% generation %} markers")])
def test_model_mode_explains_what_is_missing(template, problem):
    with pytest.raises(ValueError, match=problem) as info:
        resolve_chat_template(Tok(template), "model", "org/base-13b")
    assert "org/base-13b" in str(info.value) and "chat_template: ultrachat" in str(info.value)


def test_the_tiny_models_template_is_used_as_is(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert resolve_chat_template(tokenizer, "model", str(tiny_model_dir))[1] == "model"


def test_zephyr_template_renders_the_recipes_format_with_loss_on_answers(tiny_model_dir):
    from transformers import AutoTokenizer

    from ultrachat.training.examples import IGNORE_INDEX, encode

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = ZEPHYR_CHAT_TEMPLATE
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    eos = tokenizer.eos_token
    assert tokenizer.apply_chat_template(messages, tokenize=False) == f"<|user|>\nHi{eos}\n<|assistant|>\nHello.{eos}\n"
    assert tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True).endswith(
        "<|assistant|>\n")
    _, labels = encode(tokenizer, messages)
    assert tokenizer.decode([t for t in labels if t != IGNORE_INDEX]) == "Hello." + eos
