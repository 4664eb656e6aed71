"""Preference records -> DPO rows: the layouts users bring, prompt masking, truncation, bad records."""

import json
from collections import Counter

import pytest

from ultrachat.config.training import TrainStage
from ultrachat.training.builder import ExampleBuilder, record_row
from ultrachat.training.examples import IGNORE_INDEX
from ultrachat.training.preference_pairs import SFT_LAYOUT, normalize_pair, pair_example

QUESTION = "Why is the sea salty?"
GOOD, BAD = "Rivers carry dissolved minerals into it.", "Because of fish."


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def conversation(answer, context=({"role": "user", "content": QUESTION},)):
    return [*context, {"role": "assistant", "content": answer}]


@pytest.mark.parametrize("record", [
    {"prompt": QUESTION, "prompt_id": "x", "chosen": conversation(GOOD), "rejected": conversation(BAD),
     "score_chosen": 9.0, "score_rejected": 3.0},  # ultrafeedback_binarized
    {"prompt": [{"role": "user", "content": QUESTION}], "chosen": [{"role": "assistant", "content": GOOD}],
     "rejected": [{"role": "assistant", "content": BAD}]},  # TRL conversational
    {"prompt": QUESTION, "chosen": GOOD, "rejected": BAD},  # plain texts
], ids=["ultrafeedback_binarized", "conversational", "texts"])
def test_layouts_normalize_to_the_same_pair(record):
    pair, reason = normalize_pair(record)
    assert reason == ""
    assert pair == {"context": [{"role": "user", "content": QUESTION}], "chosen": GOOD, "rejected": BAD}


def test_multi_turn_context_is_kept():
    context = ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
               {"role": "assistant", "content": "Hello."}, {"role": "user", "content": QUESTION})
    pair, _ = normalize_pair({"chosen": conversation(GOOD, context), "rejected": conversation(BAD, context)})
    assert pair["context"] == list(context)


@pytest.mark.parametrize("record, reason", [
    ({"messages": conversation(GOOD)}, SFT_LAYOUT),
    ({"prompt": QUESTION, "chosen": GOOD}, SFT_LAYOUT),
    ({"prompt": QUESTION, "chosen": GOOD, "rejected": GOOD}, "identical_chosen_and_rejected"),
    ({"prompt": QUESTION, "chosen": GOOD, "rejected": "  "}, "empty_or_non_text_answer"),
    ({"chosen": conversation(GOOD), "rejected": conversation(BAD, ({"role": "user", "content": "Other?"},))},
     "chosen_and_rejected_have_different_prompts"),
    ({"chosen": GOOD, "rejected": BAD}, "no_prompt"),
    ({"prompt": [{"role": "assistant", "content": "x"}], "chosen": GOOD, "rejected": BAD}, "bad_prompt_turns"),
    ([1, 2], "not_an_object"),
])
def test_bad_records_get_a_reason(record, reason):
    assert normalize_pair(record) == (None, reason)


def test_labels_are_the_answer_only_over_a_shared_prompt(tokenizer):
    pair, _ = normalize_pair({"prompt": QUESTION, "chosen": GOOD, "rejected": BAD})
    row = pair_example(tokenizer, pair, 512, 256, Counter())
    prompt_len = row["chosen_labels"].index(next(t for t in row["chosen_labels"] if t != IGNORE_INDEX))
    assert row["chosen_input_ids"][:prompt_len] == row["rejected_input_ids"][:prompt_len]
    assert tokenizer.decode([t for t in row["chosen_labels"] if t != IGNORE_INDEX]) == GOOD + tokenizer.eos_token
    assert tokenizer.decode([t for t in row["rejected_labels"] if t != IGNORE_INDEX]) == BAD + tokenizer.eos_token
    assert row["num_tokens"] == len(row["chosen_input_ids"]) + len(row["rejected_input_ids"])


def test_long_prompts_keep_their_end_and_long_answers_are_cut_and_counted(tokenizer):
    long_question = "a long preamble " * 100 + QUESTION
    pair, _ = normalize_pair({"prompt": long_question, "chosen": GOOD * 20, "rejected": BAD})
    counts = Counter()
    row = pair_example(tokenizer, pair, 96, 64, counts)
    assert counts == {"prompt_truncated": 1, "answer_truncated": 1}
    prompt = [t for t, label in zip(row["chosen_input_ids"], row["chosen_labels"]) if label == IGNORE_INDEX]
    assert len(prompt) == 64 and "salty" in tokenizer.decode(prompt)
    assert len(row["chosen_input_ids"]) == 96 and len(row["rejected_input_ids"]) < 96


def test_builder_makes_pair_rows_and_counts_skips(tiny_model_dir, tokenizer):
    records = [{"prompt": f"{QUESTION} ({i})", "chosen": GOOD, "rejected": BAD} for i in range(6)]
    records += [{"prompt": QUESTION, "chosen": GOOD, "rejected": GOOD}]
    rows = [record_row(r, f"prefs.jsonl:{i + 1}") for i, r in enumerate(records)]
    rows.append(record_row({"messages": conversation(GOOD)}, "sft.jsonl:1"))
    batch = {key: [r[key] for r in rows] for key in rows[0]}
    builder = ExampleBuilder(str(tiny_model_dir), tokenizer.chat_template, 256, False, 0.0, "auto", method="dpo",
                             max_prompt_length=128)
    out = builder(batch)
    kinds = list(out["kind"])
    assert kinds.count("train") == 6 and kinds[-1] == "stats"
    stats = json.loads(out["stats"][-1])
    assert stats["skipped_identical_chosen_and_rejected"] == 1 and stats[f"skipped_{SFT_LAYOUT}"] == 1
    assert stats["sft_layout_at@sft.jsonl:1"] == 1 and stats["train_rows"] == 6
    assert set(out) == {"kind", "chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels",
                        "num_tokens", "stats"}


def stage(**extra):
    return {"model": "tiny:tiny", "data": {"paths": ["x.jsonl"]}, **extra}


def test_dpo_config_problems_are_reported_together():
    with pytest.raises(ValueError) as err:
        TrainStage.model_validate(stage(method="dpo", packing=True, max_seq_len=256, dpo={"max_prompt_length": 256}))
    assert "packing does not apply to method dpo" in str(err.value)
    assert "dpo.max_prompt_length (256) leaves no room" in str(err.value)
    with pytest.raises(ValueError, match="dpo settings are given but method is sft"):
        TrainStage.model_validate(stage(dpo={"beta": 0.01}))
    assert TrainStage.model_validate(stage(method="dpo", dpo={"beta": 0.01, "loss": "ipo"})).dpo.beta == 0.01
    sft = TrainStage.model_validate(stage())
    assert TrainStage.model_validate(sft.model_dump()).method == "sft"  # a dump carries the dpo defaults
