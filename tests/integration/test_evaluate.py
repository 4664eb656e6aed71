"""`jobs/evaluate.py` on a real local Ray against the fake OpenAI server (the platform's backend is the
official `openai` client): scripted verdicts (consistent, order-following, garbage) checked in the
aggregated numbers, caching and resume after a kill, structured-output fallback, and bad endpoints."""

import json
import os
import signal
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from generate_runs import finish, run_job, start_job
from ports import free_port
from ultrachat.devtools.fake_openai import FakeBehavior, FakeOpenAIServer

KEY = "eval-secret-key"
# id -> (class, how the judge treats it)
SCRIPT = {"p1": ("math", "fair"), "p2": ("math", "fair"), "p3": ("math", "first"), "p4": ("math", "garbage-once"),
          "p5": ("writing", "tie"), "p6": ("writing", "garbage"), "p7": ("writing", "fair"),
          "p8": ("writing", "first")}
SCORES = {"GOOD": 9, "MID": 6, "BAD": 4}


def write_prompts(path: Path, ids=tuple(SCRIPT)) -> Path:
    path.write_text("".join(json.dumps({"id": i, "class": SCRIPT[i][0], "prompt": f"Question {i} [{SCRIPT[i][1]}]?"})
                            + "\n" for i in ids))
    return path


def reply(messages) -> str:
    """Candidates answer by their system prompt's quality tag; the judge follows the question's script."""
    if messages[0]["role"] == "system" and messages[0]["content"] in SCORES:
        return f"{messages[0]['content']} answer to {messages[-1]['content']} " + "detail " * SCORES[messages[0]['content']]
    reminded = messages[-1]["content"].startswith("Your reply did not follow")
    body = messages[-3 if reminded else -1]["content"]
    behaviour = next(b for _, b in SCRIPT.values() if f"[{b}]" in body)
    if behaviour == "garbage" or (behaviour == "garbage-once" and not reminded):
        return "Both answers have merits and I would rather not choose."
    if "[Answer A]" in body:
        first = body.split("[Answer A]")[1].split("[End of Answer A]")[0]
        second = body.split("[Answer B]")[1].split("[End of Answer B]")[0]
        if behaviour == "tie":
            verdict = "tie"
        elif behaviour == "first":
            verdict = "A"  # position bias: whatever is shown first
        else:
            verdict = "A" if _quality(first) > _quality(second) else "B"
        return json.dumps({"reason": "scripted", "verdict": verdict})
    answer = body.split("[Answer]")[1]
    return f"Fine.\nScore: {_quality(answer)}"


def _quality(text: str) -> int:
    return next(score for tag, score in SCORES.items() if f"{tag} answer" in text)


def eval_config(tmp_path: Path, candidate_url: str, judge_url: str, prompts: Path, tags=("GOOD", "BAD"), **extra) -> Path:
    def chat(url):
        return {"backend": "openai", "base_url": url, "model": "fake-model", "api_key_env": "UC_EVAL_KEY",
                "max_retries": 1, "backoff_initial_s": 0.05, "backoff_max_s": 0.1, "timeout_s": 10}

    config = {"output_dir": str(tmp_path / "eval"), "prompts": {"path": str(prompts)},
              "candidates": [{"name": tag.lower(), "chat": chat(candidate_url), "system_prompt": tag,
                              "sampling": {"max_tokens": 50}} for tag in tags],
              "judge": {"chat": chat(judge_url), "sampling": {"temperature": 0, "max_tokens": 100}},
              "baseline": "bad", "bootstrap": {"samples": 500},
              "actors": {"min_actors": 1, "max_actors": 1, "calls_per_batch": 4, "batches_in_flight": 2}, **extra}
    path = tmp_path / "evaluate.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def evaluate(config, *overrides):
    return run_job(config, *overrides, env_extra={"UC_EVAL_KEY": KEY}, job="evaluate", timeout=600)


def results(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "eval" / "results.json").read_text())


@pytest.fixture
def server():
    with FakeOpenAIServer(FakeBehavior(reply_fn=reply, required_api_key=KEY, record_last=1000)) as fake:
        yield fake


def test_scripted_verdicts_aggregate_to_hand_counted_numbers_and_reruns_pay_only_for_new_work(
        ray_address, tmp_path, server):
    config = eval_config(tmp_path, server.base_url, server.base_url, write_prompts(tmp_path / "p.jsonl"))
    code, summary, stderr = evaluate(config, "dry_run=true")
    assert code == 0, stderr[-3000:]
    plan = summary["counts"]["plan"]
    assert server.stats.total == 0 and plan["answers"]["to_make"] == 16 and plan["judgments"]["planned"] == 8 * (2 + 2)

    code, summary, stderr = evaluate(config)
    assert code == 0, stderr[-3000:]
    r = results(tmp_path)
    pair = r["pairwise"]["good vs bad"]
    # p6 has no verdict (garbage twice): incomplete. p3, p8 follow the order: flipped, so ties.
    # p1, p2, p4 (parsed when asked again), p7: wins; p5: a consistent tie.
    assert (pair["complete"], pair["incomplete"]) == (7, 1)
    overall = pair["overall"]
    assert overall["win"] == pytest.approx(100 * 4 / 7) and overall["tie"] == pytest.approx(100 * 3 / 7)
    assert overall["lose"] == 0 and overall["win_rate"] == pytest.approx(100 * 5.5 / 7)
    assert overall["win_rate_no_ties"] == 100
    assert pair["per_class"]["math"]["win"] == 75 and pair["per_class"]["writing"]["tie"] == pytest.approx(200 / 3)
    assert pair["position_consistency"] == pytest.approx(100 * 5 / 7)
    low, high = overall["ci"]["win"]
    assert low <= overall["win"] <= high
    assert pair["length_controlled"]["longer_wins"] == 100  # the good answers are the longer ones here
    single = r["single"]
    assert single["good"]["overall"]["mean"] == 9 and single["bad"]["overall"]["mean"] == 4
    assert single["good"]["overall"]["n"] == 7  # p6's score is unparseable: counted, not guessed
    judge = r["judge"]
    assert (judge["planned"], judge["parsed"], judge["unparseable"], judge["failed"]) == (32, 28, 4, 0)
    assert judge["asked_again"] == 8 and judge["schema_constrained"] == 32
    assert judge["parse_failure_rate"] == pytest.approx(12.5)
    assert any(b.get("response_format", {}).get("type") == "json_schema" for b in server.stats.bodies)
    report = (tmp_path / "eval" / "report.md").read_text()
    for expected in ["| good vs bad | 7 | 57.1", "position consistency: 71.4%", "4 unparseable",
                     "UltraLM-13B vs Vicuna-13B: win 39.1", "| math | 4 | 75.0", "plots/pairwise-1.png"]:
        assert expected in report, expected
    assert all((tmp_path / "eval" / "plots" / name).stat().st_size > 0
               for name in ("pairwise-1.png", "scores.png", "lengths.png"))
    # 16 answers + 32 judgments, each judged reply without a verdict asked once more (p4, p6: 4 each).
    assert server.stats.total == 16 + 32 + 8

    # The same run again: everything is cached, nothing is called, the numbers are the same.
    calls = server.stats.total
    code, summary, stderr = evaluate(config)
    assert code == 0, stderr[-3000:]
    assert server.stats.total == calls and summary["counts"]["calls"]["answers"]["made_now"] == 0
    assert results(tmp_path)["pairwise"] == r["pairwise"]

    # A new candidate pays only for its own answers and judgments.
    config = eval_config(tmp_path, server.base_url, server.base_url, tmp_path / "p.jsonl", tags=("GOOD", "MID", "BAD"))
    code, summary, stderr = evaluate(config)
    assert code == 0, stderr[-3000:]
    assert server.stats.total - calls == 8 + 8 * 2 + 8 + 6  # answers, both orders vs bad, scores, asked again
    assert results(tmp_path)["pairwise"]["good vs bad"] == r["pairwise"]["good vs bad"]
    assert results(tmp_path)["single"]["mid"]["overall"]["mean"] == 6


def test_killed_run_reruns_to_the_same_results_without_repeating_cached_calls(ray_address, tmp_path, server):
    prompts = write_prompts(tmp_path / "p.jsonl", ids=("p1", "p2", "p3", "p5", "p7", "p8"))
    config = eval_config(tmp_path, server.base_url, server.base_url, prompts,
                         actors={"min_actors": 1, "max_actors": 1, "calls_per_batch": 1, "batches_in_flight": 1})
    server.behavior.latency_s = 0.4
    process = start_job(config, env_extra={"UC_EVAL_KEY": KEY}, job="evaluate")
    answers = tmp_path / "eval" / "cache" / "answers"
    deadline = time.monotonic() + 300
    while len(list(answers.glob("part-*.parquet"))) < 3:
        assert process.poll() is None and time.monotonic() < deadline, finish(process)[2][-3000:]
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate()
    cached = [pq.read_table(p).to_pylist()[0] for p in answers.glob("part-*.parquet")]
    server.behavior.latency_s = 0.0
    code, summary, stderr = evaluate(config)
    assert code == 0, stderr[-3000:]
    assert summary["counts"]["calls"]["answers"]["cached"] == len(cached) >= 3
    # Every cached answer was asked exactly once over both runs; the rest were asked by the re-run (a call in
    # flight at the kill, never written, may be asked twice: that is the only repeat allowed).
    asked = [json.dumps(body["messages"]) for body in server.stats.bodies]
    for record in cached:
        tag, question = record["text"].split(" answer to ")[0], record["text"].split(" answer to ")[1].split("?")[0] + "?"
        assert asked.count(json.dumps([{"role": "system", "content": tag}, {"role": "user", "content": question}])) == 1
    total_calls = 12 + 6 * 4  # 12 answers; both orders and two scores per prompt
    assert total_calls <= server.stats.total <= total_calls + 2
    pair = results(tmp_path)["pairwise"]["good vs bad"]
    assert (pair["overall"]["win"], pair["overall"]["tie"]) == (50.0, 50.0) and pair["incomplete"] == 0


def test_schema_refusing_judge_falls_back_to_text_and_bad_endpoints_are_named(ray_address, tmp_path, server):
    prompts = write_prompts(tmp_path / "p.jsonl", ids=("p1", "p7"))
    with FakeOpenAIServer(FakeBehavior(reply_fn=reply, required_api_key=KEY, structured_output=False)) as judge:
        config = eval_config(tmp_path, server.base_url, judge.base_url, prompts)
        code, summary, stderr = evaluate(config)
        assert code == 0, stderr[-3000:]
        r = results(tmp_path)
        assert r["judge"]["parsed"] == 8 and r["judge"]["schema_constrained"] == 0
        assert r["pairwise"]["good vs bad"]["overall"]["win"] == 100

        # A judge that answers 500 to everything: the calls fail after their retries, are counted, and the
        # job exits partial with the report written; answers stay cached.
        judge.behavior.fault_rate, judge.behavior.random_fault_kinds = 1.0, ("500",)
        code, summary, stderr = evaluate(config, f"output_dir={tmp_path / 'failing'}")
        assert code == 3 and summary["status"] == "partial", stderr[-3000:]
        assert summary["counts"]["calls"]["judgments"]["failed"] == 8 and "8 calls failed" in summary["error"]
        failing = json.loads((tmp_path / "failing" / "results.json").read_text())
        assert failing["judge"]["failed"] == 8 and "retries_exhausted:http_500" in str(failing["judge"]["errors"])
        judge.behavior.fault_rate = 0.0
        asked = server.stats.total
        code, summary, stderr = evaluate(config, f"output_dir={tmp_path / 'failing'}")
        assert code == 0, stderr[-3000:]
        assert server.stats.total == asked  # the candidates' answers were cached; only the judge was asked
        assert summary["counts"]["calls"]["judgments"]["made_now"] == 8

    # A candidate endpoint that is down, and a model the server does not serve: named before any call.
    down = f"http://127.0.0.1:{free_port()}/v1"
    config = eval_config(tmp_path, server.base_url, server.base_url, prompts)
    asked = server.stats.total
    code, summary, stderr = evaluate(config, f"candidates.1.chat.base_url={down}",
                                     "candidates.0.chat.model=no-such-model", f"output_dir={tmp_path / 'bad'}")
    assert code == 2, stderr[-3000:]
    assert f"candidates[1].chat: base_url {down} is not reachable" in summary["error"]
    assert "candidates[0].chat.model" in summary["error"] and "'no-such-model'" in summary["error"]
    assert server.stats.total == asked
    code, summary, _ = run_job(config, job="evaluate", env_extra={"UC_EVAL_KEY": ""})
    assert code == 2 and "candidates[0].chat.api_key_env: environment variable UC_EVAL_KEY is unset" in summary["error"]
