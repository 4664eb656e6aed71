"""The Ray Data preparation stage's callable, run directly on batches (no Ray): formats, skips and
their counts, the train/eval split per dialogue, packing."""

import json

import pytest

from ultrachat.inputs import Malformed
from ultrachat.models.chat_template import ULTRACHAT_CHAT_TEMPLATE
from ultrachat.training.builder import ExampleBuilder, eval_bucket, record_row

DIALOGUE = [{"role": "user", "content": "How do I start running?"},
            {"role": "assistant", "content": "Begin with short, easy runs."}]


def batch(*rows):
    return {key: [r[key] for r in rows] for key in ("source", "record", "malformed")}


def records():
    return batch(
        record_row({"messages": DIALOGUE, "status": "kept"}, "a.jsonl:1"),
        record_row({"messages": DIALOGUE, "status": "failed:api"}, "a.jsonl:2"),
        record_row({"conversations": [{"from": "human", "value": "Hi there"}, {"from": "gpt", "value": "Hello!"}]},
                   "a.jsonl:3"),
        record_row({"data": ["What is rain?", "Water falling from clouds."]}, "a.jsonl:4"),
        record_row({"messages": [{"role": "robot", "content": "x"}]}, "a.jsonl:5"),
        record_row(Malformed("malformed JSON"), "a.jsonl:6"),
    )


@pytest.fixture(scope="module")
def tokenizer_dir(tiny_model_dir):
    return str(tiny_model_dir)


def split(out):
    rows = [dict(zip(out, values)) for values in zip(*out.values())]
    stats = [json.loads(r["stats"]) for r in rows if r["kind"] == "stats"]
    return [r for r in rows if r["kind"] != "stats"], stats


def test_counts_every_record_and_skips_with_reasons(tokenizer_dir):
    builder = ExampleBuilder(tokenizer_dir, ULTRACHAT_CHAT_TEMPLATE, 256, False, 0.0, "auto")
    rows, (stats,) = split(builder(records()))
    assert stats["records"] == 6 and stats["skipped_malformed"] == 1
    assert stats["skipped_status_not_kept"] == 1 and stats["skipped_unknown_role"] == 1
    assert stats["train_dialogues"] == 3 == len(rows) == stats["train_rows"]
    for row in rows:
        assert len(row["input_ids"]) == len(row["labels"]) == len(row["position_ids"]) == row["num_tokens"]


def test_format_setting_limits_the_fields_read(tokenizer_dir):
    builder = ExampleBuilder(tokenizer_dir, ULTRACHAT_CHAT_TEMPLATE, 256, False, 0.0, "sharegpt")
    _, (stats,) = split(builder(records()))
    assert stats["train_dialogues"] == 1 and stats["skipped_no_messages"] == 3


def test_eval_split_is_per_dialogue_and_stable(tokenizer_dir):
    long_dialogue = DIALOGUE * 6  # split into several pieces at max_seq_len 48
    builder = ExampleBuilder(tokenizer_dir, ULTRACHAT_CHAT_TEMPLATE, 48, False, 0.5, "auto")
    rows, (stats,) = split(builder(batch(record_row({"messages": long_dialogue}, "b.jsonl:1"))))
    expected = "eval" if eval_bucket(long_dialogue) < 0.5 else "train"
    assert len(rows) > 1 and {r["kind"] for r in rows} == {expected}  # all pieces on one side
    assert stats["split_dialogues"] == 1


def test_packing_fills_rows_to_max_seq_len(tokenizer_dir):
    builder = ExampleBuilder(tokenizer_dir, ULTRACHAT_CHAT_TEMPLATE, 256, True, 0.0, "auto")
    many = batch(*[record_row({"messages": DIALOGUE}, f"c.jsonl:{i}") for i in range(20)])
    rows, (stats,) = split(builder(many))
    assert stats["examples"] == 20 and len(rows) < 20
    assert all(len(r["input_ids"]) == 256 for r in rows)
    assert sum(r["num_tokens"] for r in rows) == sum(1 for r in rows for p in r["position_ids"]) - \
        sum(256 - r["num_tokens"] for r in rows)
