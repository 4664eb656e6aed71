"""Failing loudly without losing anything, on a real Ray head: a Ray Train failure, a Ray actor that cannot
come back, a vLLM engine that dies mid-run, and a batch that keeps killing its actor. Every job ends with a
nonzero exit, its one-line reason and the JSON summary as the last stdout line (unreachable endpoints:
tests/integration/test_generate.py)."""

import sys

import pyarrow as pa
import pytest

from processes import kill_from_outside, processes_matching, wait_for
from generate_runs import REPO, SAMPLE, SAMPLE_IDS, finish, openai_config, read_dialogues, start_job
from training_runs import finish_train, logged_steps, start_train, train_config, write_data
from ultrachat.devtools.fake_openai import FakeOpenAIServer


def assert_clean_failure(code, summary, stderr, status, expected_code):
    assert code == expected_code, stderr[-4000:]
    assert summary is not None and summary["status"] == status, (summary, stderr[-4000:])
    assert "\n" not in summary["error"] and summary["error"]
    # Nothing escaped the job contract: no uncaught traceback at the end of stderr.
    assert "Traceback" not in stderr.strip().splitlines()[-1]


def test_a_train_failure_ends_with_exit_1_and_a_summary(ray_address, small_model_dir, tmp_path):
    data = write_data(tmp_path / "data.jsonl", count=80)
    config = train_config(tmp_path, data, log_every_steps=1, max_failures=0)
    process = start_train(config, env_extra={"RAY_ADDRESS": ray_address})
    wait_for(lambda: logged_steps(tmp_path / "out") >= 2, process, "step 2")
    assert kill_from_outside("RayTrainWorker"), "no Ray Train worker process was found to kill"
    code, summary, stderr = finish_train(process)
    assert_clean_failure(code, summary, stderr, "failed", 1)
    assert "training failed after 0 restart(s)" in summary["error"] and "re-run" in summary["error"]
    assert summary["output"] == str(tmp_path / "out")


@pytest.fixture
def fake_key(monkeypatch):
    monkeypatch.setenv("UC_FAKE_KEY", "test-key-123")


def test_an_actor_that_cannot_come_back_fails_the_job_cleanly(ray_address, tmp_path, fake_key):
    with FakeOpenAIServer() as server:
        server.behavior.latency_s = 0.5
        process = start_job(openai_config(tmp_path, server), "actors.dialogues_per_batch=2",
                            "actors.batches_in_flight=1", "failures.max_actor_restarts=0")
        wait_for(lambda: list((tmp_path / "out" / "dialogues").glob("_parts/part-*.parquet")), process, "a first shard")
        assert kill_from_outside("DialogueWorker")
        code, summary, stderr = finish(process)
    assert_clean_failure(code, summary, stderr, "failed", 1)
    # What finished before the kill is kept: a re-run finishes the rest.
    assert 0 < len(read_dialogues(tmp_path / "out")) < len(SAMPLE_IDS)


def test_a_dead_vllm_engine_is_replaced_by_a_restarted_actor(ray_address, small_model_dir, tmp_path):
    out = tmp_path / "out"
    process = start_job(REPO / "configs" / "generate" / "local.yaml", f"output_dir={out}", "stages=[dialogues]",
                        # One dialogue at a time, so the first shard comes after one dialogue and 11 still
                        # need the engine (with 8 in batches of 2, a fast machine could finish the rest
                        # before the kill: the engine was already shutting down).
                        f"openings.path={SAMPLE}", "openings.limit=12", "actors.dialogues_per_batch=1",
                        "actors.batches_in_flight=1",
                        f"user.chat.model={small_model_dir}", f"assistant.chat.model={small_model_dir}")
    wait_for(lambda: list((out / "dialogues").glob("_parts/part-*.parquet")), process, "a first shard")
    # The engine core process the actor's AsyncLLM talks to, as a GPU fault or OOM would end it.
    assert kill_from_outside("EngineCore", children_only="DialogueWorker"), \
        [p.info["cmdline"] for p in processes_matching("VLLM")]
    code, summary, stderr = finish(process)
    assert code == 0, stderr[-5000:]
    frame = read_dialogues(out)
    assert len(frame) == 12 and frame["id"].is_unique
    assert not frame["status"].str.startswith("failed").any(), frame["status"].tolist()
    assert "the vLLM engine died" in stderr and stderr.count("starting vLLM engine") >= 2


POISON = "poison"


class PoisonHandler:
    """A row handler whose row ``poison`` kills its actor every time (as a segfault or OOM would)."""

    async def run(self, row):
        if row["id"] == POISON:
            import os

            os._exit(1)
        return {"id": row["id"], "status": "ok", "error": ""}

    def failed(self, row, reason, error):
        return {"id": row["id"], "status": f"failed:{reason}", "error": error}

    def counts(self, records):
        from collections import Counter

        return Counter()

    def observe(self, records):
        pass

    def close(self):
        pass


def test_a_batch_that_keeps_killing_its_actor_is_recorded_as_failed(ray_address, tmp_path):
    import ray
    from ray import cloudpickle  # Ray's own copy pickles the UDF: register with it

    from ultrachat.config.base import FailurePolicy, PoolResources
    from ultrachat.shards import ShardSink, read_column
    from ultrachat.stages.pool import PoolStage, PoolWorker, run_pool_stage

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    schema = pa.schema([("id", pa.string()), ("status", pa.string()), ("error", pa.string())])
    ids = [f"row{i}" for i in range(6)] + [POISON]
    stage = PoolStage(
        worker=PoolWorker, handler_factory=PoisonHandler, key="id", schema=schema, unit="rows",
        pool=PoolResources(num_cpus=0.5), batch_size=1, batches_in_flight=1,
        failures=FailurePolicy(max_batch_attempts=2, max_actor_restarts=4, max_failed_fraction=0.5),
        describe=lambda c, total, elapsed: f"rows {c['done']}/{total}", dataset_name="poison-test", run_name=None,
        run_label="poison-test", log_level="INFO", secrets={})
    ray.init(address=ray_address)
    try:
        counts = run_pool_stage(stage, ray.data.from_items([{"id": i} for i in ids]), len(ids),
                                ShardSink(str(tmp_path / "out"), schema))
    finally:
        ray.shutdown()
    table = read_column(str(tmp_path / "out"), ["id", "status", "error"], schema).to_pylist()
    by_id = {row["id"]: row for row in table}
    assert sorted(by_id) == sorted(ids) and len(table) == len(ids)
    assert by_id[POISON]["status"] == "failed:actor_died" and "given up after 2 attempts" in by_id[POISON]["error"]
    assert all(by_id[i]["status"] == "ok" for i in ids if i != POISON)
    assert counts["failed"] == 1 and counts["done"] == len(ids)
