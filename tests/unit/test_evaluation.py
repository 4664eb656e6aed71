"""The evaluate job's pure parts: the prompt set and its bad lines, the config's checks, the call keys,
the verdict parsers, and the statistics against hand-computed values."""

import json

import numpy as np
import pytest
from pydantic import ValidationError

from ultrachat.config.evaluation import EvaluateStage, PromptSet
from ultrachat.errors import InputError
from ultrachat.evaluation import scoring
from ultrachat.evaluation.calls import answer_calls, judgment_calls
from ultrachat.evaluation.judging import parse_pairwise, parse_score
from ultrachat.evaluation.prompts import load_prompts

W, T, L = scoring.WIN, scoring.TIE, scoring.LOSE


def stage(**extra) -> EvaluateStage:
    chat = {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key_env": None}
    return EvaluateStage.model_validate({"candidates": [{"name": "new", "chat": chat}, {"name": "old", "chat": chat}],
                                         "judge": {"chat": chat}, **extra})


# ---------------------------------------------------------------------------------------- prompts


def test_the_papers_385_prompts_ship_with_their_classes():
    prompts = load_prompts(PromptSet())
    counts = {}
    for p in prompts:
        counts[p.klass] = counts.get(p.klass, 0) + 1
    assert len(prompts) == 385 and len({p.id for p in prompts}) == 385
    assert counts == {"Vicuna": 80, "Writing": 80, "Commonsense-Easy": 30, "Commonsense-Moderate": 30,
                      "World Knowledge-Easy": 30, "World Knowledge-Difficult": 30,
                      "Professional Knowledge-Physics": 30, "Professional Knowledge-Biology": 15,
                      "Ability Math": 30, "Ability Reasoning": 30}
    subset = load_prompts(PromptSet(per_class=1, classes=["Ability Math", "Writing"]))
    assert [p.klass for p in subset] == ["Writing", "Ability Math"] or sorted(p.klass for p in subset) == [
        "Ability Math", "Writing"]
    with pytest.raises(InputError, match=r"prompts.classes: \['Maths'\] not in .*Ability Math"):
        load_prompts(PromptSet(classes=["Maths"]))


def test_a_prompt_file_names_every_bad_line(tmp_path):
    path = tmp_path / "p.jsonl"
    lines = [{"id": "a", "class": "x", "prompt": "Hi?"},
             {"id": "a", "class": "x", "prompt": "Again?"},
             {"class": "x", "prompt": "No id"},
             {"id": "c", "prompt": "No class"},
             {"id": "d", "class": "x"},
             {"id": "e", "class": "x", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
             {"id": "f", "class": "x", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                                                    {"role": "user", "content": "and?"}]}]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n{broken\n")
    with pytest.raises(InputError) as caught:
        load_prompts(PromptSet(path=str(path)))
    message = str(caught.value)
    for expected in [":2: duplicate id 'a' (first on line 1)", ":3: missing or empty 'id'", ":4: missing or empty 'class'",
                     ":5: neither 'prompt' nor 'messages'", ":6: the last message must be the user turn",
                     ":8: not JSON", "6 bad line(s)"]:
        assert expected in message, (expected, message)
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(lines[0]) + "\n" + json.dumps(lines[6]) + "\n")
    prompts = load_prompts(PromptSet(path=str(good)))
    assert [p.id for p in prompts] == ["a", "f"] and prompts[1].chat_messages()[-1] == {"role": "user", "content": "and?"}
    assert "USER: q" in prompts[1].question and prompts[0].question == "Hi?"
    with pytest.raises(InputError, match="does not exist"):
        load_prompts(PromptSet(path=str(tmp_path / "missing.jsonl")))


# ----------------------------------------------------------------------------------------- config


def test_config_names_each_candidate_problem_at_once():
    chat = {"backend": "openai", "base_url": "http://x/v1", "model": "m"}
    with pytest.raises(ValidationError) as caught:
        EvaluateStage.model_validate({"candidates": [{"name": "a", "chat": chat}, {"name": "a", "chat": chat}],
                                      "judge": {"chat": chat}, "baseline": "b"})
    assert "name ['a'] used twice" in str(caught.value) and "baseline: 'b' is not a candidate" in str(caught.value)
    assert "pairwise needs at least two candidates" in str(caught.value)
    with pytest.raises(ValidationError, match="reserved for the judge"):
        EvaluateStage.model_validate({"candidates": [{"name": "judge", "chat": chat}], "judge": {"chat": chat},
                                      "protocols": ["single"]})
    with pytest.raises(ValidationError, match=r"pairwise_prompt lacks \['\{answer_b\}'\]"):
        EvaluateStage.model_validate({"candidates": [{"name": "a", "chat": chat}], "protocols": ["single"],
                                      "judge": {"chat": chat, "pairwise_prompt": "Compare {question}: {answer_a} ..."}})
    assert stage(baseline="old").pairs() == [("new", "old")]


def test_cache_keys_follow_what_is_asked():
    prompts = load_prompts(PromptSet(per_class=1, limit=2))
    config = stage()
    rows, keys = answer_calls(config, prompts)
    # Both candidates call the same endpoint, model and sampling: the same call, made once.
    assert len(rows) == 2 and keys[(prompts[0].id, "new")] == keys[(prompts[0].id, "old")]
    hotter = stage(candidates=[c.model_dump() | ({"sampling": {"temperature": 1.0}} if c.name == "old" else {})
                               for c in config.candidates])
    rows, keys = answer_calls(hotter, prompts)
    assert len(rows) == 4 and keys[(prompts[0].id, "new")] != keys[(prompts[0].id, "old")]
    revised = stage(candidates=[c.model_dump() | {"revision": "r2"} for c in hotter.candidates])
    assert set(answer_calls(revised, prompts)[1].values()).isdisjoint(keys.values())
    answers = {(p.id, name): f"{name} says {p.id}" for p in prompts for name in ("new", "old")}
    rows, meaning = judgment_calls(hotter, prompts, answers)
    # Both orders of the pair and one score per answer, per prompt.
    assert len(rows) == 2 * (2 + 2)
    first = json.loads(next(r for r in rows if r["key"] == meaning[(prompts[0].id, "pairwise", "new", "old")])["messages"])
    body = first[-1]["content"]
    assert body.index(f"new says {prompts[0].id}") < body.index(f"old says {prompts[0].id}")
    assert "Correctness comes first" in body
    # A missing answer leaves its judgments out (the report counts them as incomplete).
    del answers[(prompts[1].id, "old")]
    assert len(judgment_calls(hotter, prompts, answers)[0]) == 4 + 1


# ---------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("text, verdict", [
    ('{"reason": "B is wrong", "verdict": "A"}', "A"),
    ('Sure.\n```json\n{"verdict": "tie", "reason": "same"}\n```', "tie"),
    ("Answer B is more accurate. [[B]]", "B"),
    ("Both are fine. [[C]]", "tie"),
    ("Reasoning... Final verdict: Answer A", "A"),
    ("**Verdict:** tie", "tie"),
    ('{"verdict": "maybe"}', None),
    ("I like both answers a lot.", None),
    ("", None),
])
def test_pairwise_verdicts_parse_or_are_none(text, verdict):
    assert parse_pairwise(text) == verdict


@pytest.mark.parametrize("text, score", [
    ('{"reason": "ok", "score": 8}', 8.0), ("Good answer.\nScore: 7/10", 7.0), ("Rating: [[9]]", 9.0),
    ('{"score": 11}', None), ("Score: 0", None), ("It is decent.", None), ('{"score": "high"}', None),
])
def test_scores_parse_in_range_or_are_none(text, score):
    assert parse_score(text) == score


# ------------------------------------------------------------------------------------- statistics


def test_pair_outcomes_count_a_flip_as_a_tie():
    assert scoring.pair_outcome("A", "B") == (W, True)  # X first won, X second won
    assert scoring.pair_outcome("B", "A") == (L, True)
    assert scoring.pair_outcome("tie", "tie") == (T, True)
    assert scoring.pair_outcome("A", "A") == (T, False)  # the first answer always wins: position bias
    assert scoring.pair_outcome("A", "tie") == (T, False)
    assert scoring.pair_outcome(None, "A") == (None, None)


def test_rates_match_hand_computed_values():
    outcomes = [W, W, W, T, L, L, T, W]  # 4 wins, 2 ties, 2 losses
    r = scoring.rates(outcomes)
    assert (r["n"], r["win"], r["tie"], r["lose"]) == (8, 50.0, 25.0, 25.0)
    assert r["win_rate"] == pytest.approx(62.5)  # (4 + 2/2) / 8
    assert r["win_rate_no_ties"] == pytest.approx(100 * 4 / 6)
    assert scoring.rates([T, T])["win_rate_no_ties"] is None and scoring.rates([])["win"] is None


def test_bootstrap_intervals_match_a_plain_loop():
    outcomes = [W, W, W, T, L, L, T, W, L, W]
    got = scoring.bootstrap_rates(outcomes, samples=500, seed=3, confidence=0.9)
    rng = np.random.default_rng(3)
    draws = rng.integers(0, len(outcomes), size=(500, len(outcomes)))
    win_rates = []
    for row in draws:
        sample = [outcomes[i] for i in row]
        win_rates.append(100 * sum(sample) / len(sample))  # ties count 0.5
    assert got["win_rate"] == pytest.approx(list(np.percentile(win_rates, [5, 95])))
    assert got["win"][0] <= 50 <= got["win"][1]
    # No spread, no interval width.
    assert scoring.bootstrap_rates([W] * 5, 200, 0, 0.95)["win"] == [100.0, 100.0]


def test_length_control_removes_a_pure_length_effect():
    rng = np.random.default_rng(0)
    diffs = rng.normal(0, 50, 400)
    # The judge picks the longer answer 90% of the time and nothing else: at equal length, a coin flip.
    outcomes = [W if (d > 0) == (rng.random() < 0.9) else L for d in diffs]
    lc = scoring.length_controlled(outcomes, list(diffs))
    assert 40 < lc["win_rate"] < 60 and lc["length_coefficient"] > 1 and lc["longer_wins"] > 85
    # Lengths that do not matter leave the win rate as it was.
    outcomes = [W] * 300 + [L] * 100
    lc = scoring.length_controlled(outcomes, list(rng.normal(0, 50, 400)))
    assert lc["win_rate"] == pytest.approx(75, abs=3)


def test_score_summary_mean_interval_and_histogram():
    s = scoring.score_summary([7, 8, 9, 8], samples=300, seed=0, confidence=0.95)
    assert s["mean"] == 8.0 and s["histogram"] == {"7": 1, "8": 2, "9": 1}
    assert 7 <= s["ci"][0] <= 8 <= s["ci"][1] <= 9
