"""The preferences job's pieces without a cluster: prompts from the layouts users bring, the completion
slots, the aspect-rating parser, and Argilla's binarization rule (mean of aspects, ties dropped)."""

import json
from collections import Counter

import pytest

from ultrachat.config.preferences import PreferencesStage, PromptSource
from ultrachat.errors import InputError
from ultrachat.preferences.binarize import binarize
from ultrachat.preferences.calls import completion_calls, completion_messages, rating_calls, slots
from ultrachat.preferences.prompts import PreferencePrompt, load_prompts, prompt_from_record, prompt_id
from ultrachat.preferences.ratings import AspectProtocols, parse_ratings, ratings_schema

ASPECTS = ["instruction_following", "honesty", "truthfulness", "helpfulness"]


def stage(**extra) -> PreferencesStage:
    base = {"prompts": {"paths": ["x.jsonl"]}, "judge": {"chat": {"backend": "instant"}},
            "models": [{"name": f"m{i}", "chat": {"backend": "instant"}} for i in range(5)]}
    return PreferencesStage.model_validate({**base, **extra})


# ------------------------------------------------------------------------------------------ prompts

def test_prompts_from_openings_prompt_text_and_dialogues(tmp_path):
    dialogue = [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"},
                {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}]
    lines = [{"id": "o1", "text": "What is a tide?"}, {"prompt": "Why is the sky blue?"},
             {"id": "d1", "messages": dialogue, "status": "kept"},
             {"id": "d2", "messages": dialogue, "status": "filtered:repetition"},
             {"prompt": "Why is the sky blue?"}, {"nothing": 1}]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n{broken\n")
    prompts, counts = load_prompts(PromptSource(paths=[str(path)], cut="last"))
    assert [p.text for p in prompts] == ["What is a tide?", "Why is the sky blue?", "Q2"]
    assert prompts[2].messages == tuple(dialogue[:3])  # the earlier turns are the context
    assert prompts[0].id == prompt_id([{"role": "user", "content": "What is a tide?"}])
    assert counts == Counter(records=7, prompts=3, duplicate_prompts=1, skipped_status_not_kept=1,
                             skipped_no_prompt_messages_or_text=1, skipped_malformed=1)
    assert prompts[2].source == f"{path}:3"


def test_cut_first_and_random_is_seeded_per_record():
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"t{i}"} for i in range(8)]
    first, _ = prompt_from_record({"id": "a", "messages": messages}, "f:1", PromptSource(paths=["x"], cut="first"))
    assert first.messages == tuple(messages[:1])
    drawn = {prompt_from_record({"id": str(i), "messages": messages}, "f:1",
                                PromptSource(paths=["x"], cut="random"))[0].text for i in range(40)}
    assert drawn == {"t0", "t2", "t4", "t6"}
    again, _ = prompt_from_record({"id": "7", "messages": messages}, "f:9", PromptSource(paths=["x"], cut="random"))
    assert again == prompt_from_record({"id": "7", "messages": messages}, "f:9",
                                       PromptSource(paths=["x"], cut="random"))[0]


def test_no_usable_prompt_is_an_input_error_with_the_counts(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"chosen": "x"}) + "\n")
    with pytest.raises(InputError, match=r"no usable prompt in 1 records .*skipped_no_prompt_messages_or_text"):
        load_prompts(PromptSource(paths=[str(path)]))


# -------------------------------------------------------------------------------------------- calls

def test_slots_use_different_models_and_seeded_principles():
    config = stage()
    prompt = PreferencePrompt("p1", ({"role": "user", "content": "Q"},), "f:1")
    chosen = slots(config, prompt)
    assert len({m.name for m, _ in chosen}) == 4 and chosen == slots(config, prompt)
    rows, meaning = completion_calls(config, [prompt])
    assert len(rows) == 4 and len({r["key"] for r in rows}) == 4
    assert json.loads(rows[0]["messages"])[0]["role"] == "system"
    one_model = stage(models=[{"name": "solo", "chat": {"backend": "instant"}}])
    rows, _ = completion_calls(one_model, [prompt])
    assert {r["endpoint"] for r in rows} == {"solo"} and len({r["key"] for r in rows}) == 4  # slots differ


def test_principle_goes_ahead_of_an_existing_system_turn():
    config = stage()
    prompt = PreferencePrompt("p", ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q"}), "")
    messages = completion_messages(config.principles[0], prompt)
    assert len(messages) == 2 and messages[0]["content"].endswith("\n\nBe brief.")


def test_rating_calls_only_for_completions_that_exist():
    config = stage()
    prompt = PreferencePrompt("p", ({"role": "user", "content": "Why?"},), "")
    rows, meaning = rating_calls(config, [prompt], {("p", 0): "Because.", ("p", 2): "No idea."})
    assert set(meaning) == {("p", 0), ("p", 2)} and len(rows) == 2
    text = json.loads(rows[0]["messages"])[-1]["content"]
    assert "Why?" in text and "Because." in text and all(a in text for a in ASPECTS)


# ------------------------------------------------------------------------------------------ ratings

def good(**ratings):
    return {a: {"rationale": f"about {a}", "rating": ratings.get(a, 3)} for a in ASPECTS}


@pytest.mark.parametrize("text, expected", [
    (json.dumps(good(honesty=5)), {**{a: 3 for a in ASPECTS}, "honesty": 5}),
    ("```json\n" + json.dumps(good()) + "\n```", {a: 3 for a in ASPECTS}),
    (json.dumps({a: 4 for a in ASPECTS}), {a: 4 for a in ASPECTS}),
    ("Instruction following: 4\nHonesty: 5/5 - careful\nTruthfulness - 3\n**Helpfulness**: 2", dict(
        instruction_following=4, honesty=5, truthfulness=3, helpfulness=2)),
])
def test_ratings_are_read_from_json_or_text(text, expected):
    ratings = parse_ratings(ASPECTS, text)
    assert {a: r["rating"] for a, r in ratings.items()} == expected


@pytest.mark.parametrize("text", [
    "I think it is a good answer.",
    json.dumps({**good(), "honesty": {"rationale": "x", "rating": 7}}),  # out of range
    json.dumps({a: good()[a] for a in ASPECTS[:3]}),  # an aspect missing
    json.dumps(good(helpfulness=3.5)),
])
def test_incomplete_or_out_of_range_ratings_are_unparseable(text):
    assert parse_ratings(ASPECTS, text) is None


def test_protocols_store_ratings_as_json_and_ask_with_a_schema():
    protocols = AspectProtocols(tuple(ASPECTS), "auto", "again")
    assert json.loads(protocols.parse("aspects", json.dumps(good())))["honesty"]["rating"] == 3
    schema = protocols.response_format("aspects")["json_schema"]["schema"]
    assert schema == ratings_schema(ASPECTS) and schema["required"] == ASPECTS


# ----------------------------------------------------------------------------------------- binarize

PROMPT = PreferencePrompt("pid", ({"role": "user", "content": "Q"},), "f:1")


def completion(text, *ratings):
    parsed = {a: {"rating": r, "rationale": ""} for a, r in zip(ASPECTS, ratings)} if ratings else None
    return {"text": text, "ratings": parsed, "model": f"model-{text}", "principle": "honesty"}


def test_chosen_is_the_best_mean_and_rejected_a_lower_one():
    completions = [completion("a", 5, 5, 5, 5), completion("b", 1, 1, 1, 1), completion("c", 2, 2, 2, 2),
                   completion("d")]
    pair, reason = binarize(PROMPT, completions, seed=0)
    assert reason == "" and pair["chosen"][-1] == {"role": "assistant", "content": "a"}
    assert pair["rejected"][-1]["content"] in {"b", "c"} and pair["score_chosen"] == 5.0
    assert pair["messages"] == pair["chosen"] and pair["prompt"] == "Q" and pair["prompt_id"] == "pid"
    rejected = {binarize(PROMPT, completions, seed=s)[0]["rejected"][-1]["content"] for s in range(20)}
    assert rejected == {"b", "c"}  # a seeded draw among the lower-scored, not always the worst


def test_mean_of_aspects_not_one_aspect_decides():
    pair, _ = binarize(PROMPT, [completion("x", 5, 1, 1, 1), completion("y", 3, 3, 3, 3)], seed=0)
    assert pair["chosen"][-1]["content"] == "y" and pair["score_rejected"] == 2.0


@pytest.mark.parametrize("completions, reason", [
    ([completion("a", 3, 3, 3, 3), completion("b", 4, 2, 3, 3)], "all_tied"),
    ([completion("a", 3, 3, 3, 3), completion("b")], "fewer_than_two_rated"),
    ([completion("same", 5, 5, 5, 5), completion("same", 1, 1, 1, 1)], "identical_texts"),
])
def test_no_pair_from_ties_too_few_ratings_or_identical_texts(completions, reason):
    assert binarize(PROMPT, completions, seed=0) == (None, reason)
