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


def test_ray_job_submit_with_the_repo_as_working_dir(ray_head, repo_root):
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(ray_head["dashboard"])
    job_id = client.submit_job(
        entrypoint="python jobs/doctor.py",
        runtime_env={"working_dir": str(repo_root),
                     "excludes": [".venv", ".git", "outputs", "**/__pycache__", ".pytest_cache"]},
        submission_id=f"ultrachat-doctor-{int(time.time())}",
    )
    deadline = time.monotonic() + 300
    while (status := client.get_job_status(job_id)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED,
                                                             JobStatus.STOPPED}:
        if time.monotonic() > deadline:
            client.stop_job(job_id)
            pytest.fail(f"job {job_id} still {status} after 300 s")
        time.sleep(1)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs[-4000:]
    report = json.loads(logs.strip().splitlines()[-1])
    assert report["job"] == "doctor" and report["status"] == "succeeded", report
    # The driver and the node both run the working dir's copy, and stdlib `platform` is intact.
    for facts in [report["driver"], *report["nodes"]]:
        assert facts["stdlib_platform_module"] and facts["system"] == "Linux"
        assert not facts["ultrachat_path"].startswith(str(repo_root)), facts["ultrachat_path"]
    assert len(report["nodes"]) == 1 and report["nodes"][0]["node_ip"] == "127.0.0.1"
