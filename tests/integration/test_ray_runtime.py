"""init_ray against a real head on 127.0.0.1, a local start, and `ray job submit` with the repo as working_dir."""

import json
import os
import subprocess
import sys
import time

import pytest

from ultrachat.config.schema import RaySettings
from ultrachat.ray_runtime import init_ray


def test_connects_to_ray_address_once_and_reuses_it(ray_address):
    import ray

    ray.shutdown()  # start from a process that is not connected yet, whatever ran before
    info = init_ray(RaySettings(namespace="uc-test"), "test-job", "run-1")
    try:
        assert info["address"] == ray_address and info["cpus"] == 2 and info["namespace"] == "uc-test"
        assert init_ray(RaySettings(namespace="other"), "test-job") == info  # no second ray.init
        # Ray Data's V1 parquet reader by default (V2 starts a footer-actor pool per read); the key switches it.
        assert ray.data.DataContext.get_current().use_datasource_v2 is False
        init_ray(RaySettings(parquet_reader="v2"), "test-job")
        assert ray.data.DataContext.get_current().use_datasource_v2 is True
        assert {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]} == {"127.0.0.1"}
    finally:
        ray.shutdown()


LOCAL_START = """
import json, ray
from ultrachat.config.schema import RaySettings
from ultrachat.ray_runtime import init_ray
info = init_ray(RaySettings(local_num_cpus=1), "local-check")
nodes = [n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]]
ray.shutdown()
print(json.dumps({"info": info, "nodes": nodes}))
"""


def test_starts_a_private_local_ray_on_loopback_without_ray_address():
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    result = subprocess.run([sys.executable, "-c", LOCAL_START], capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["nodes"] == ["127.0.0.1"] and report["info"]["cpus"] == 1
    assert report["info"]["address"].startswith("127.0.0.1:")


# What a `--working-dir .` upload of the repo must leave out: venvs, run outputs, git history, caches.
# (Ray also honours .gitignore; these hold even where .gitignore says otherwise.) One list for every
# job submitted from this file.
WORKING_DIR_EXCLUDES = [".venv", "venv", ".git", "outputs", "**/__pycache__", ".pytest_cache", ".benchmarks",
                        "*.egg-info", "build", "dist"]


def submit_and_wait(ray_head, repo_root, entrypoint: str, name: str, timeout_s: float,
                    env_vars: dict[str, str] | None = None) -> tuple[str, str]:
    """Submit ``entrypoint`` with the repo as working_dir, as `ray job submit --working-dir .` does; wait for it.

    Returns (submission id, logs) once the job SUCCEEDED; fails the test with the logs' tail otherwise.
    """
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(ray_head["dashboard"])
    runtime_env = {"working_dir": str(repo_root), "excludes": WORKING_DIR_EXCLUDES}
    if env_vars:
        runtime_env["env_vars"] = env_vars
    job_id = client.submit_job(
        entrypoint=entrypoint,
        runtime_env=runtime_env,
        # Recognisable in the dashboard's Jobs page and in `ray job list`.
        submission_id=f"ultrachat-{name}-{int(time.time())}",
        metadata={"ultrachat_job": name, "submitted_by": "tests/integration/test_ray_runtime.py"},
    )
    deadline = time.monotonic() + timeout_s
    while (status := client.get_job_status(job_id)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED,
                                                             JobStatus.STOPPED}:
        if time.monotonic() > deadline:
            client.stop_job(job_id)
            pytest.fail(f"job {job_id} still {status} after {timeout_s:g} s:\n{client.get_job_logs(job_id)[-4000:]}")
        time.sleep(1)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs[-4000:]
    info = client.get_job_info(job_id)
    assert info.metadata["ultrachat_job"] == name and info.entrypoint == entrypoint
    return job_id, logs


def test_ray_job_submit_with_the_repo_as_working_dir(ray_head, repo_root):
    _, logs = submit_and_wait(ray_head, repo_root, "python jobs/doctor.py", "doctor", timeout_s=300)
    report = json.loads(logs.strip().splitlines()[-1])
    assert report["job"] == "doctor" and report["status"] == "succeeded", report
    # The driver and the node both run the working dir's copy, and stdlib `platform` is intact.
    for facts in [report["driver"], *report["nodes"]]:
        assert facts["stdlib_platform_module"] and facts["system"] == "Linux"
        assert not facts["ultrachat_path"].startswith(str(repo_root)), facts["ultrachat_path"]
    assert len(report["nodes"]) == 1 and report["nodes"][0]["node_ip"] == "127.0.0.1"


def test_ray_job_submit_runs_the_generation_job(ray_head, repo_root, model_cache, small_model_dir, tmp_path):
    """The README's cluster flow on the session head: `ray job submit --working-dir . -- python jobs/generate.py`.

    configs/generate/local.yaml on 4 of the shipped opening lines (dialogues only: vLLM CPU, with the
    tiny `small` model in place of the config's SmolLM2: only the plumbing is under test). The job's cwd is the uploaded copy of the repo, so relative inputs resolve there and
    output_dir must be absolute to outlive it.
    """
    import pandas as pd

    model_files = {p: p.stat().st_mtime_ns for p in small_model_dir.rglob("*") if p.is_file()}
    out = tmp_path / "generate"
    entrypoint = (f"python jobs/generate.py --config configs/generate/local.yaml output_dir={out} "
                  f"'stages=[dialogues]' openings.path=platform/ultrachat/data/sample_openings.jsonl "
                  f"openings.limit=4 run_name=ray-job-submit-test "
                  f"user.chat.model=tiny:small assistant.chat.model=tiny:small")
    # The head inherited ULTRACHAT_CACHE when it started (ray_head depends on model_cache); passing it
    # again makes the job's view explicit: `tiny:small` resolves to this session's build, offline.
    job_id, logs = submit_and_wait(ray_head, repo_root, entrypoint, "generate", timeout_s=600,
                                   env_vars={"ULTRACHAT_CACHE": str(model_cache), "HF_HUB_OFFLINE": "1"})

    summary = json.loads(logs.strip().splitlines()[-1])
    assert summary["job"] == "generate" and summary["status"] == "succeeded", summary
    assert summary["output"] == str(out)
    counts = summary["counts"]
    assert counts["dialogues"] == 4, counts
    assert sum(v for k, v in counts.items() if k.startswith("status_")) == 4, counts
    assert counts["tokens_out"] > 0, counts

    frame = pd.read_parquet(out / "dialogues")
    assert len(frame) == 4 and frame["id"].is_unique
    shipped = [json.loads(line) for line in
               (repo_root / "platform/ultrachat/data/sample_openings.jsonl").read_text().splitlines() if line.strip()]
    assert set(frame["id"]) <= {o["id"] for o in shipped}
    for record in frame.to_dict("records"):
        assert record["status"] == "kept" or record["status"].split(":")[0] in {"filtered", "failed"}, record["status"]
        messages = list(record["messages"])
        assert messages and messages[0]["role"] == "user", messages
        if record["status"] == "kept":
            assert messages[-1]["role"] == "assistant" and messages[-1]["content"], messages
    # The relative openings path resolved in the job's cwd (the uploaded copy), on the driver and the workers.
    sources = {record["opening"]["source"].rpartition(":")[0] for record in frame.to_dict("records")}
    assert sources == {"platform/ultrachat/data/sample_openings.jsonl"}, sources
    # Nothing was rebuilt (the job used this session's model) and the resolved config sits beside the output.
    assert {p: p.stat().st_mtime_ns for p in small_model_dir.rglob("*") if p.is_file()} == model_files
    assert (out / "resolved_config.yaml").is_file()
    kept = frame[frame.status == "kept"]
    assert len(kept) and (kept["turns"].map(len) >= 2).all()
    # Both roles ran on one engine: the actor's log, forwarded into the job's, names a single start.
    assert logs.count("starting vLLM engine") == 1, logs[-3000:]
    # Loadable as is by HF datasets, in the ultrachat_200k shape. (This is the suite's dialogue job on
    # the vLLM engine with the tiny model; test_pipeline runs one on SmolLM2.)
    import datasets

    loaded = datasets.load_dataset("parquet", data_files=str(out / "dialogues" / "*.parquet"), split="train")
    assert len(loaded) == 4 and loaded[0]["messages"][0] == {"role": "user", "content": loaded[0]["opening"]["text"]}
