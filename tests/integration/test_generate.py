"""The generate job end to end on a real Ray head: the OpenAI backend against the fake
server, malformed input, and killing the driver or an actor midway then resuming. On the vLLM CPU engine:
test_ray_runtime (the job submitted with the tiny model), test_pipeline (SmolLM2), test_construction."""

import json
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest

from ultrachat.devtools.fake_openai import FakeOpenAIServer

from generate_runs import SAMPLE, SAMPLE_IDS, finish, openai_config, read_dialogues, run_job, start_job


def check_records(frame: pd.DataFrame) -> None:
    assert frame["id"].is_unique
    for record in frame.to_dict("records"):
        status = record["status"]
        assert status == "kept" or status.split(":")[0] in {"filtered", "failed", "invalid"}, status
        messages = list(record["messages"])
        if status == "kept":
            roles = [m["role"] for m in messages]
            assert roles[0] == "user" and roles[-1] == "assistant"
            assert all(a != b for a, b in zip(roles, roles[1:])), roles
            assert record["num_rounds"] == roles.count("assistant") >= 1
            assert messages[0]["content"] == record["opening"]["text"]
        if not status.startswith("invalid"):
            turns = list(record["turns"])
            assert turns[0]["model"] == "opening"
            assert all(t["model"] and t["finish_reason"] for t in turns[1:])


@pytest.fixture
def fake_key(monkeypatch):
    monkeypatch.setenv("UC_FAKE_KEY", "test-key-123")


def test_openai_backend_end_to_end_with_malformed_input(ray_address, tmp_path, fake_key):
    openings = tmp_path / "openings"
    openings.mkdir()
    (openings / "a.jsonl").write_text(SAMPLE.read_text())
    (openings / "b.jsonl").write_text('{"text": "What is a tide?"}\nnot json\n{"sector": "IV", "text": "x"}\n'
                                      '{"id": "no-text"}\n\n{"text": "What is a tide?"}\n')
    with FakeOpenAIServer() as server:
        code, summary, stderr = run_job(openai_config(tmp_path, server, openings=openings))
    assert code == 0, stderr[-3000:]
    counts = summary["counts"]
    assert summary["status"] == "succeeded"
    assert counts["invalid_lines"] == 3 and counts["duplicate_lines"] == 1
    assert f"{openings / 'b.jsonl'}:2" in stderr and "malformed JSON" in stderr
    frame = read_dialogues(tmp_path / "out")
    check_records(frame)
    assert len(frame) == len(SAMPLE_IDS) + 1 + 3  # samples, the tide question once, 3 invalid lines
    assert SAMPLE_IDS <= set(frame["id"])
    assert (frame["status"].str.startswith("invalid")).sum() == 3
    assert counts["status_kept"] >= 1 and frame.loc[frame.status == "kept", "user_model"].eq("fake-chat").all()
    # The JSONL export and the resolved config sit beside the shards.
    exported = pd.concat(pd.read_json(p, lines=True) for p in (tmp_path / "out" / "dialogues_jsonl").glob("*.json*"))
    assert len(exported) == len(frame)
    assert (tmp_path / "out" / "resolved_config.yaml").is_file()


def test_missing_api_key_fails_before_any_work(ray_address, tmp_path, monkeypatch):
    monkeypatch.delenv("UC_FAKE_KEY", raising=False)
    with FakeOpenAIServer() as server:
        code, summary, _ = run_job(openai_config(tmp_path, server))
        assert server.stats.total == 0
    assert code == 1 and "UC_FAKE_KEY" in summary["error"] and "export UC_FAKE_KEY" in summary["error"]
    assert not (tmp_path / "out" / "dialogues").exists()


def test_unreachable_endpoint_stops_early_as_partial_and_a_rerun_retries_the_failures(ray_address, tmp_path,
                                                                                       fake_key):
    class Closed:
        base_url = "http://127.0.0.1:9/v1"  # discard port: connection refused

    config = openai_config(tmp_path, Closed)
    # One batch of 2 at a time: the first batch's failures are enough to judge (min_finished=2).
    code, summary, stderr = run_job(config, "actors.dialogues_per_batch=2", "actors.batches_in_flight=1",
                                    "failures.min_finished=2", timeout=300)
    assert code == 3 and summary["status"] == "partial", stderr[-3000:]
    assert "max_failed_fraction" in summary["error"] and "retries_exhausted" in summary["error"], summary["error"]
    frame = read_dialogues(tmp_path / "out")
    assert 2 <= len(frame) < len(SAMPLE_IDS), len(frame)  # stopped early: no more calls into a dead endpoint
    assert frame["status"].str.startswith("failed:retries_exhausted").all(), frame["status"]
    assert summary["counts"]["status_failed"] == len(frame)
    # The endpoint is back: a re-run retries exactly the failures, replaces their records and does the rest.
    with FakeOpenAIServer() as server:
        code, summary, stderr = run_job(config, f"user.chat.base_url={server.base_url}",
                                        f"assistant.chat.base_url={server.base_url}")
    assert code == 0, stderr[-3000:]
    assert summary["counts"]["retried_failed"] == len(frame) == summary["counts"]["replaced_failed_records"]
    rerun = read_dialogues(tmp_path / "out")
    assert set(rerun["id"]) == SAMPLE_IDS and rerun["id"].is_unique
    assert not rerun["status"].str.startswith("failed").any()


def wait_for_shards(out_dir: Path, process, minimum=1, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(list((out_dir / "dialogues").glob("_parts/part-*.parquet"))) >= minimum:
            return
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.2)
    pytest.fail("no dialogue shard was written in time")


def test_killed_driver_then_rerun_finishes_only_what_is_missing(ray_address, tmp_path, fake_key):
    with FakeOpenAIServer() as server:
        server.behavior.latency_s = 0.5
        config = openai_config(tmp_path, server)
        slow = ("actors.dialogues_per_batch=2", "actors.batches_in_flight=1")
        process = start_job(config, *slow)
        wait_for_shards(tmp_path / "out", process)
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        partial = read_dialogues(tmp_path / "out")
        assert 0 < len(partial) < len(SAMPLE_IDS)
        server.behavior.latency_s = 0.0
        code, summary, stderr = run_job(config, *slow)
    assert code == 0, stderr[-3000:]
    frame = read_dialogues(tmp_path / "out")
    assert frame["id"].is_unique and set(frame["id"]) == SAMPLE_IDS
    assert summary["counts"]["already_done"] == len(partial)
    # What finished before the kill is kept as it was, not regenerated.
    before = partial.set_index("id")["messages"].map(lambda m: json.dumps(list(m), default=str))
    after = frame.set_index("id").loc[before.index, "messages"].map(lambda m: json.dumps(list(m), default=str))
    assert (before == after).all()


def test_killed_actor_is_replaced_and_its_dialogues_redone(ray_address, tmp_path, fake_key):
    import psutil

    with FakeOpenAIServer() as server:
        server.behavior.latency_s = 0.5
        process = start_job(openai_config(tmp_path, server), "actors.dialogues_per_batch=2",
                            "actors.batches_in_flight=1")
        wait_for_shards(tmp_path / "out", process)
        workers = [p for p in psutil.process_iter(["cmdline"]) if "DialogueWorker" in " ".join(p.info["cmdline"] or [])]
        assert workers, "no DialogueWorker actor process found"
        for worker in workers:
            worker.kill()
        code, summary, stderr = finish(process)
    assert code == 0, stderr[-3000:]
    frame = read_dialogues(tmp_path / "out")
    assert frame["id"].is_unique and set(frame["id"]) == SAMPLE_IDS
    check_records(frame)
