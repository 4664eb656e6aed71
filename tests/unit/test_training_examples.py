"""Training examples: assistant-only labels, round-boundary splitting that never drops a round."""

import pytest

from ultrachat.training.dialogues import normalize_dialogue
from ultrachat.training.examples import IGNORE_INDEX, SplitStats, dialogue_examples, encode


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def rounds(n: int, words: int = 6) -> list[dict]:
    out = []
    for i in range(n):
        out += [{"role": "user", "content": f"question {i} " + "about tides " * words},
                {"role": "assistant", "content": f"answer {i} " + "the moon pulls water " * words}]
    return out


def trained_text(tokenizer, example) -> str:
    return tokenizer.decode([t for t in example["labels"] if t != IGNORE_INDEX])


def test_labels_are_exactly_the_assistant_text_and_its_end_token(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}] + rounds(2)
    ids, labels = encode(tokenizer, messages)
    assert len(ids) == len(labels)
    expected = "".join(m["content"] + tokenizer.eos_token for m in messages if m["role"] == "assistant")
    assert tokenizer.decode([t for t in labels if t != IGNORE_INDEX]) == expected


def test_a_dialogue_that_fits_is_one_example(tokenizer):
    stats = SplitStats()
    (example,) = dialogue_examples(tokenizer, rounds(3), 2048, stats)
    assert example["input_ids"] == encode(tokenizer, rounds(3))[0]
    assert (stats.examples, stats.split_dialogues, stats.truncated_rounds) == (1, 0, 0)


@pytest.mark.parametrize("fit_rounds", [1, 2, 3])
def test_long_dialogues_split_at_round_boundaries_and_lose_no_round(tokenizer, fit_rounds):
    messages = [{"role": "system", "content": "Be brief."}] + rounds(5)
    # Any `fit_rounds` consecutive rounds fit (their token counts differ slightly), one more never does.
    limit = max(len(encode(tokenizer, messages[:1] + messages[1 + 2 * i:1 + 2 * (i + fit_rounds)])[0])
                for i in range(5 - fit_rounds + 1))
    stats = SplitStats()
    examples = dialogue_examples(tokenizer, messages, limit, stats)
    assert all(len(e["input_ids"]) <= limit for e in examples)
    trained = "".join(trained_text(tokenizer, e) for e in examples)
    # Every assistant turn trains exactly once, in order, including the last one.
    assert trained == "".join(m["content"] + tokenizer.eos_token for m in messages if m["role"] == "assistant")
    assert len(examples) == -(-5 // fit_rounds) and stats.truncated_rounds == 0
    assert all(tokenizer.decode(e["input_ids"]).startswith(tokenizer.bos_token + "Be brief.") for e in examples)


def test_the_limit_crossed_exactly_at_the_last_round_keeps_that_round(tokenizer):
    messages = rounds(3)
    limit = len(encode(tokenizer, messages[:4])[0])  # rounds 1-2 fit; round 3 crosses the limit
    examples = dialogue_examples(tokenizer, messages, limit, SplitStats())
    assert len(examples) == 2 and "answer 2" in trained_text(tokenizer, examples[-1])


def test_a_single_round_longer_than_the_limit_is_truncated_and_counted(tokenizer):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "long answer " * 200}]
    stats = SplitStats()
    (example,) = dialogue_examples(tokenizer, messages, 64, stats)
    assert len(example["input_ids"]) == 64 and stats.truncated_rounds == 1
    assert trained_text(tokenizer, example).startswith("long answer")


@pytest.mark.parametrize("record, reason", [
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}, ""),
    ({"messages": [{"role": "user", "content": "Hi"}], "status": "kept"}, "no_assistant_turn"),
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}], "status": "filtered:x"},
     "status_not_kept"),
    ({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}, ""),
    ({"conversations": [{"from": "robot", "value": "Hi"}]}, "unknown_role"),
    ({"data": ["Hi", "Hello", "More?"]}, ""),
    ({"messages": [{"role": "assistant", "content": "Hi"}, {"role": "user", "content": "x"},
                   {"role": "assistant", "content": "y"}]}, "roles_do_not_alternate"),
    ({"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": "y"}]}, "empty_or_non_text_turn"),
    ({"text": "x"}, "no_messages"),
    ("x", "not_an_object"),
])
def test_dialogue_formats(record, reason):
    messages, why = normalize_dialogue(record)
    assert why == reason
    if not reason:
        assert [m["role"] for m in messages] == ["user", "assistant"]
