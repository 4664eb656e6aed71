"""Opening-line construction end to end on a real Ray head: the fake OpenAI server answering in every
list shape (and with garbage for some prompts), then dialogues from the built openings in the same
job; a dry run that calls nothing; resume; bad inputs; and one run on the vLLM CPU engine."""

import json
from pathlib import Path

import pandas as pd
import yaml

from test_generate import check_records, run_job
from ultrachat.devtools.fake_lists import list_reply
from ultrachat.devtools.fake_openai import FakeBehavior, FakeOpenAIServer
from ultrachat.ids import stable_id

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "platform" / "ultrachat" / "data"
GARBAGE = "I'm sorry, but I can't help with that request."


def reply(messages):
    prompt = messages[-1]["content"]
    if '"Mount Everest"' in prompt and "general questions" in prompt:
        return GARBAGE  # this entity's meta-questions never parse: recorded as failed, the rest go on
    if "Travel and adventure" in prompt and "subtopics" in prompt:
        return "1. Solo travel\n2. Backpacking"
    if '"Backpacking"' in prompt and "questions" in prompt:
        return "1. Is backpacking safe for beginners?\n2. Is Backpacking safe for beginners!"  # near duplicates
    if "backpacking safe" in prompt.lower():
        return "1. What should I pack?\n2. How do I plan a route?"  # the same for both: exact duplicates
    return list_reply(messages)


def construction_config(tmp_path, server, **extra) -> Path:
    entities = tmp_path / "entities.jsonl"
    entities.write_text('{"name": "Marie Curie", "description": "physicist and chemist"}\n{"nom": "x"}\n'
                        '{"name": "Mount Everest"}\nnot json\n')
    chat = {"backend": "openai", "base_url": server.base_url, "model": "fake-writer", "api_key_env": "UC_FAKE_KEY",
            "max_retries": 2, "backoff_initial_s": 0.05, "backoff_max_s": 0.2, "timeout_s": 10}
    config = {
        "output_dir": str(tmp_path / "out"),
        "construction": {
            "llm": {"chat": chat},
            "max_items_per_call": 3,
            "I": {"target": 12,
                  "topics": {"meta_topic_limit": 3, "subtopics_per_meta_topic": 2, "questions_per_subtopic": 2,
                             "further_questions_per_question": 2},
                  "entities": {"input": {"path": str(entities)}, "meta_questions_per_entity": 2,
                               "specific_per_meta_question": 2, "extended_per_meta_question": 4}},
            "II": {"target": 6, "material_type_limit": 3, "instructions_per_type": 4, "refine_fraction": 0.8},
            "III": {"target": 6, "corpus": {"path": str(DATA / "sample_c4.jsonl")}, "pieces": 4,
                    "instructions_per_piece": 3, "max_material_tokens": 40},
            "actors": {"num_cpus": 0.5, "calls_per_batch": 4},
            # MinHash on (at a ~0.92 Jaccard threshold: only near-copies) to run its path end to end.
            "dedup": {"normalized": True, "minhash": True, "num_perm": 64, "bands": 4},
        },
        "user": {"chat": chat, "sampling": {"max_tokens": 30}},
        "assistant": {"chat": chat, "sampling": {"max_tokens": 60}},
        "rounds": {"I": {"min": 2, "max": 2}, "II": {"min": 2, "max": 2}, "III": {"min": 2, "max": 2}},
        "actors": {"num_cpus": 0.5, "dialogues_per_batch": 4},
        **extra,
    }
    path = tmp_path / "generate.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_construct_then_dialogues_with_list_shapes_garbage_dry_run_and_resume(ray_address, tmp_path, monkeypatch):
    monkeypatch.setenv("UC_FAKE_KEY", "k")
    with FakeOpenAIServer(FakeBehavior(reply_fn=reply)) as server:
        config = construction_config(tmp_path, server)
        code, plan, stderr = run_job(config, "dry_run=true")
        assert code == 0, stderr[-3000:]
        assert server.stats.total == 0  # a dry run calls nothing
        planned = plan["counts"]["construction"]
        assert planned["stages"]["subtopics"]["calls"] == 3 and planned["stages"]["instructions"]["calls"] == 6
        assert planned["inputs"]["entities"] == {"records": 4, "invalid": 2, "duplicates": 0, "used": 2}
        assert plan["counts"]["dialogues"]["dialogues"] == 24
        assert not (tmp_path / "out" / "openings").exists()

        code, summary, stderr = run_job(config)
        assert code == 0, stderr[-3000:]
        calls_made = server.stats.total
        assert f"{tmp_path / 'entities.jsonl'}:2" in stderr and "no non-empty 'name'" in stderr
        built = summary["counts"]["construction"]
        stages = built["stages"]
        # Everything the dry run planned for the first wave was called, and the garbage parent failed alone.
        assert stages["meta_questions"] == {**stages["meta_questions"], "calls": 2, "ok": 1, "failed_unparseable": 1}
        assert all(stages[s]["calls"] == planned["stages"][s]["calls"] for s in ("subtopics", "instructions"))
        assert built["duplicates_removed"]["near"] >= 1 and built["duplicates_removed"]["exact"] >= 2
        assert built["sectors"] == {"I": {"target": 12, "unique_candidates": built["sectors"]["I"]["unique_candidates"],
                                          "openings": 12},
                                    "II": {"target": 6, "unique_candidates": 12, "openings": 6},
                                    "III": {"target": 6, "unique_candidates": 12, "openings": 6}}

        calls = pd.read_parquet(tmp_path / "out" / "construction" / "calls" / "meta_questions")
        failed = calls[calls["status"] == "failed:unparseable"].iloc[0]
        assert failed["raw"] == GARBAGE and "Mount Everest" in failed["prompt"]

        openings = pd.read_parquet(tmp_path / "out" / "openings")
        assert len(openings) == 24 and openings["id"].is_unique
        assert dict(openings["sector"].value_counts()) == {"I": 12, "II": 6, "III": 6}
        for row in openings.to_dict("records"):
            provenance = json.loads(row["provenance"])
            assert row["id"] == stable_id(row["sector"], row["text"]) and provenance["sector"] == row["sector"]
            if provenance["stage"] in ("further_questions", "specific_questions", "extended_questions"):
                assert provenance["parent_question_id"] == stable_id("I", provenance.get("parent_question")
                                                                     or provenance["meta_question"])
            if row["sector"] == "I" and provenance["branch"] == "topics":
                assert provenance["meta_topic"] and provenance["subtopic"]
            if row["sector"] == "I" and provenance["branch"] == "entities":
                assert provenance["entity"] == "Marie Curie"  # Mount Everest's meta-questions failed
            if row["sector"] == "III":
                assert provenance["template_id"] in {f"t{i}" for i in range(1, 8)} and provenance["material_type"]
                assert provenance["url"].startswith("https://")
        # Even sampling: sector I's 12 split between the two branches.
        branches = [json.loads(p)["branch"] for p in openings[openings["sector"] == "I"]["provenance"]]
        assert branches.count("topics") == branches.count("entities") == 6

        dialogues = pd.read_parquet(tmp_path / "out" / "dialogues")
        check_records(dialogues)
        assert set(dialogues["id"]) == set(openings["id"])  # one dialogue per opening line, same job

        # Re-run: nothing is paid twice; only the failed (garbage) parent is asked again.
        code, again, stderr = run_job(config)
        assert code == 0, stderr[-3000:]
        assert server.stats.total == calls_made + 1
        assert again["counts"]["construction"]["sectors"] == built["sectors"]
        assert again["counts"]["already_done"] == 24
        assert sorted(pd.read_parquet(tmp_path / "out" / "openings")["id"]) == sorted(openings["id"])


def test_bad_inputs_fail_before_any_call_or_warn(ray_address, tmp_path, monkeypatch):
    monkeypatch.setenv("UC_FAKE_KEY", "k")
    with FakeOpenAIServer(FakeBehavior(reply_fn=list_reply)) as server:
        config = construction_config(tmp_path, server)
        code, summary, stderr = run_job(config, "construction.I.entities.input.path=/nonexistent/entities.jsonl")
        assert code == 2 and "construction.I.entities.input.path: /nonexistent/entities.jsonl does not exist" in stderr
        empty = tmp_path / "empty.jsonl"
        empty.write_text("\n")
        code, summary, stderr = run_job(config, f"construction.I.entities.input.path={empty}")
        assert code == 2 and "holds no valid entity records" in stderr
        odd = tmp_path / "c4.jsonl"
        odd.write_text('{"text": "Some text here.", "url": "https://qqq.invalid/zzz"}\n{"text": 5, "url": "x"}\n')
        code, summary, stderr = run_job(config, f"construction.III.corpus.path={odd}", "dry_run=true")
        assert code == 0, stderr[-3000:]
        assert "the URL keyword map matched none of the 1 pieces" in stderr and f"{odd}:2" in stderr
        materials = summary["counts"]["construction"]["inputs"]["materials"]
        assert (materials["invalid"], materials["unmatched"], materials["pieces_used"]) == (1, 1, 0)
        assert server.stats.total == 0


def test_local_default_on_the_vllm_cpu_engine(ray_address, small_model_dir, tmp_path):
    """configs/generate/local.yaml, construction only on the tiny model on vLLM's CPU engine: every call
    parses or is recorded with its raw reply. Two of its three waves (each wave's Ray Data run starts its
    own engine, ~1.5 min here): the third asks what the second does, one level down; all three waves and
    dialogues from built openings in the same job: the fake-server test above; dialogues on the vLLM
    engine: test_ray_runtime, test_pipeline."""
    out = tmp_path / "out"
    code, summary, stderr = run_job(REPO / "configs" / "generate" / "local.yaml", f"output_dir={out}",
                                    "stages=[construct]", "construction.I.topics.further_questions_per_question=0",
                                    f"construction.llm.chat.model={small_model_dir}",
                                    f"user.chat.model={small_model_dir}", f"assistant.chat.model={small_model_dir}")
    assert code == 0, stderr[-5000:]
    built = summary["counts"]["construction"]
    calls = pd.concat([pd.read_parquet(p) for p in (out / "construction" / "calls").iterdir()])
    assert set(calls["stage"]) >= {"subtopics", "meta_questions", "instructions", "material_instructions"}
    assert "further_questions" not in set(calls["stage"])
    assert calls["call_id"].is_unique and (calls["model"] != "").all()
    for row in calls.to_dict("records"):  # every call is either a parsed list or a failure with its raw reply
        assert (row["status"] == "ok" and len(row["items"]) >= 1) or (row["status"] == "failed:unparseable"
                                                                      and row["raw"] is not None), row
    assert (calls["status"] == "ok").mean() >= 0.5, calls["status"].value_counts()
    openings = pd.read_parquet(out / "openings")
    assert set(openings["sector"]) == {"I", "II", "III"} and openings["id"].is_unique
    assert len(openings) == sum(s["openings"] for s in built["sectors"].values())
    assert not (out / "dialogues").exists()
