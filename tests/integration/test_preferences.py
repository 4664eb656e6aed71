"""`jobs/preferences.py` on a real local Ray against fake OpenAI servers (one per completion model, one
for the judge): scripted answer qualities, a scripted judge (honest ratings, garbage once then fixed,
garbage always), the binarized pairs checked against hand-worked outcomes, and the cache on a re-run."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from generate_runs import run_job
from ultrachat.devtools.fake_openai import FakeBehavior, FakeOpenAIServer

KEY = "prefs-secret-key"
ASPECTS = ("instruction_following", "honesty", "truthfulness", "helpfulness")
QUALITY = {"good": 5, "fair": 3, "poor": 1}  # each model's answers are rated this on every aspect
# prompt -> what the judge does with its completions
SCRIPT = {"q1": "honest", "q2": "honest", "q3": "garbage-once", "q4": "garbage", "q5": "honest"}


def judge_reply(messages) -> str:
    """Rates an answer by the quality tag it carries, on every aspect; follows the prompt's script."""
    reminded = messages[-1]["content"].startswith("Your reply did not follow")
    body = messages[-3 if reminded else -1]["content"]
    question = body.split("[Conversation]")[1].split("[Answer]")[0]
    behaviour = next(b for q, b in SCRIPT.items() if f"({q})" in question)
    if behaviour == "garbage" or (behaviour == "garbage-once" and not reminded):
        return "A fine answer overall."
    answer = body.split("[Answer]")[1]
    rating = next(score for name, score in QUALITY.items() if f"{name} answer" in answer)
    return json.dumps({a: {"rationale": "scripted", "rating": rating} for a in ASPECTS})


def model_reply(name):
    return lambda messages: f"{name} answer to {messages[-1]['content']}"


@pytest.fixture
def servers():
    """One fake endpoint per completion model (each answers in its own quality) and one for the judge."""
    fakes = {name: FakeOpenAIServer(FakeBehavior(reply_fn=model_reply(name), required_api_key=KEY))
             for name in QUALITY}
    fakes["judge"] = FakeOpenAIServer(FakeBehavior(reply_fn=judge_reply, required_api_key=KEY, record_last=1000))
    for fake in fakes.values():
        fake.__enter__()
    try:
        yield fakes
    finally:
        for fake in fakes.values():
            fake.__exit__(None, None, None)


def prefs_config(tmp_path: Path, servers) -> Path:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": q, "prompt": f"Question ({q})?"}) + "\n" for q in SCRIPT))

    def chat(name):
        return {"backend": "openai", "base_url": servers[name].base_url, "model": "fake-model",
                "api_key_env": "UC_PREFS_KEY", "max_retries": 1, "backoff_initial_s": 0.05, "backoff_max_s": 0.1,
                "timeout_s": 10}

    config = {
        "output_dir": str(tmp_path / "prefs"), "prompts": {"paths": [str(prompts)]}, "completions_per_prompt": 3,
        "models": [{"name": name, "chat": chat(name), "sampling": {"max_tokens": 20}} for name in QUALITY],
        "judge": {"chat": chat("judge"), "sampling": {"temperature": 0, "max_tokens": 200},
                  "structured_output": "text"},
        "actors": {"min_actors": 1, "max_actors": 1, "calls_per_batch": 4, "batches_in_flight": 2},
    }
    path = tmp_path / "preferences.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run(config, *overrides):
    return run_job(config, *overrides, env_extra={"UC_PREFS_KEY": KEY}, job="preferences", timeout=600)


def test_pairs_follow_the_ratings_unparseable_is_counted_and_reruns_use_the_cache(ray_address, tmp_path, servers):
    config = prefs_config(tmp_path, servers)
    total = lambda: sum(f.stats.total for f in servers.values())  # noqa: E731
    code, summary, stderr = run(config, "dry_run=true")
    assert code == 0 and total() == 0, stderr[-3000:]
    assert summary["counts"]["plan"]["completions"]["to_make"] == 15

    code, summary, stderr = run(config)
    assert code == 0, stderr[-3000:]
    counts = summary["counts"]
    assert counts["prompts"] == 5 and counts["calls"]["completions"]["ok"] == 15
    ratings = counts["calls"]["ratings"]
    # q4's three ratings stay unparseable after the reminder; q3's are read on the second ask.
    assert ratings["planned"] == 15 and ratings["unparseable"] == 3 and ratings["ok"] == 12
    assert counts["binarize"] == {"pair": 4, "fewer_than_two_rated": 1}
    pairs = pq.read_table(tmp_path / "prefs" / "pairs" / "data.parquet").to_pylist()
    assert len(pairs) == 4 and all(p["chosen_model"] == "good" for p in pairs)
    assert all(p["score_chosen"] == 5.0 and p["score_rejected"] in (1.0, 3.0) for p in pairs)
    assert all(p["chosen"][:-1] == p["rejected"][:-1] == [{"role": "user", "content": p["prompt"]}] for p in pairs)
    completions = pq.read_table(tmp_path / "prefs" / "completions" / "data.parquet").to_pylist()
    assert len(completions) == 15
    q4 = [c for c in completions if c["prompt"] == "Question (q4)?"]
    assert {c["rating_status"] for c in q4} == {"unparseable"} and all(c["ratings"] is None for c in q4)

    before = total()
    written = (tmp_path / "prefs" / "pairs" / "data.parquet").stat().st_mtime_ns
    code, summary, stderr = run(config)
    assert code == 0, stderr[-3000:]
    assert total() == before  # everything came from the cache (unparseable is final)
    assert summary["counts"]["pairs"] == 4
    # Unchanged outputs are not rewritten, so a DPO run on them keeps its prepared data and export.
    assert (tmp_path / "prefs" / "pairs" / "data.parquet").stat().st_mtime_ns == written
