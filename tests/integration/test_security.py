"""Ray token auth, proved on loopback: the session's head runs with RAY_AUTH_MODE=token (tests/conftest.py),
as every KubeRay cluster of the repo does; the jobs' local Ray gets a token file only its owner reads;
no secret value lands in anything the jobs write or the dashboard shows."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from generate_runs import openai_config, run_job
from processes import run_job_locally
from ultrachat.devtools.fake_openai import FakeOpenAIServer
from ultrachat.ray_auth import cluster_auth_mode
from ultrachat.secret_env import SecretEnv

AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
PROBE_KEY_ENV = "UC_LEAK_PROBE_KEY"  # set only in the job's driver: the head's workers never had it


def _status(url: str, token: str | None = None, method: str = "GET", body: dict | None = None) -> int:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers, method=method),
                                    timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def _get(url: str) -> str:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {os.environ['RAY_AUTH_TOKEN']}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.read().decode()


def _without_auth(env: dict) -> dict:
    return {k: v for k, v in env.items() if k not in AUTH_ENV and k != "RAY_ADDRESS"}


def test_the_dashboard_and_jobs_api_demand_the_token(ray_head):
    jobs = f"{ray_head['dashboard']}/api/jobs/"
    right, wrong = os.environ["RAY_AUTH_TOKEN"], secrets.token_hex(32)
    assert _status(jobs) == 401
    assert _status(jobs, wrong) == 403
    assert _status(jobs, right) == 200
    attack = {"entrypoint": "touch /tmp/uc-pwned", "submission_id": f"uc-attack-{secrets.token_hex(4)}"}
    assert _status(jobs, method="POST", body=attack) == 401
    assert _status(jobs, wrong, method="POST", body=attack) == 403
    assert attack["submission_id"] not in _get(jobs)  # nothing was queued
    # The one public answer is the mode itself, which doctor and every job summary report.
    assert cluster_auth_mode(ray_head["dashboard"]) == "token"


GRPC_CLIENT = "import ray; ray.init(address='{address}'); print('CONNECTED', flush=True); ray.shutdown()"


@pytest.mark.parametrize("token", ["wrong", "none"])
def test_grpc_clients_without_the_right_token_are_refused(ray_head, token):
    env = _without_auth(dict(os.environ))
    if token == "wrong":
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    result = subprocess.run([sys.executable, "-c", GRPC_CLIENT.format(address=ray_head["address"])],
                            capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode != 0 and "CONNECTED" not in result.stdout, result.stdout + result.stderr[-2000:]
    assert "authenticat" in result.stderr.lower() or "token" in result.stderr.lower(), result.stderr[-2000:]


def test_ray_job_submit_works_with_the_token_and_fails_clearly_without(ray_head, tmp_path):
    """The README's `ray job submit` of the generate job, with and without `RAY_AUTH_MODE=token RAY_AUTH_TOKEN=...`."""
    ray_cli = str(Path(sys.executable).with_name("ray"))
    repo = Path(__file__).resolve().parents[2]
    with FakeOpenAIServer() as server:
        config = openai_config(tmp_path, server, limit=2, chat_extra={"api_key_env": None})
        command = [ray_cli, "job", "submit", "--address", ray_head["dashboard"], "--working-dir", str(repo),
                   "--runtime-env-json", json.dumps({"excludes": [".venv", ".git", "outputs", "**/__pycache__"]}),
                   "--", "python", "jobs/generate.py", "--config", str(config)]
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        refused = subprocess.run(command, capture_output=True, text=True, timeout=300, env=_without_auth(env))
        assert refused.returncode != 0, refused.stdout[-2000:]
        said = (refused.stdout + refused.stderr)
        assert "Authentication" in said and "token" in said, said[-3000:]
        assert server.stats.total == 0 and not (tmp_path / "out").exists()

        accepted = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert accepted.returncode == 0, (accepted.stdout + accepted.stderr)[-4000:]
    summaries = [json.loads(line) for line in accepted.stdout.splitlines() if line.startswith('{"job"')]
    assert summaries and summaries[-1]["status"] == "succeeded", accepted.stdout[-4000:]
    assert summaries[-1]["ray"]["auth"] == "token" and "auth_warning" not in summaries[-1]["ray"]


def _scan(roots: list[Path], values: dict[str, str], skip: set[Path] = frozenset()) -> list[str]:
    """Every regular file under ``roots`` that contains one of ``values`` (name -> secret)."""
    found = []
    for root in roots:
        for path in [root] if root.is_file() else root.rglob("*"):
            if not path.is_file() or path.is_symlink() or path in skip:
                continue
            try:
                data = path.read_bytes()
            except OSError:
                continue
            found += [f"{name} in {path}" for name, value in values.items() if value.encode() in data]
    return found


def test_api_keys_reach_the_cluster_workers_but_no_log_output_or_dashboard(ray_address, ray_head, tmp_path):
    """A job on the head whose workers lack the key: it arrives by object-store reference, and neither the
    key nor the Ray token is in the output dir, the resolved config, the Ray session's logs or what the
    dashboard's State API shows about the job's tasks and actors."""
    key = f"sk-probe-{secrets.token_hex(16)}"
    with FakeOpenAIServer() as server:
        server.behavior.required_api_key = key  # a call without the key is a 401, so success proves delivery
        config = openai_config(tmp_path, server, limit=4, chat_extra={"api_key_env": PROBE_KEY_ENV})
        code, summary, stderr = run_job(config, env_extra={PROBE_KEY_ENV: key})
        assert code == 0, stderr[-3000:]
        assert server.stats.total > 0
    assert summary["counts"]["dialogues"] == 4 and summary["ray"]["auth"] == "token"
    secrets_ = {"api key": key, "ray token": os.environ["RAY_AUTH_TOKEN"]}
    dashboard = ray_head["dashboard"]
    shown = "\n".join(_get(f"{dashboard}{path}") for path in (
        "/api/v0/tasks?detail=1&limit=10000", "/api/v0/actors?detail=1&limit=10000", "/api/jobs/",
        "/api/v0/placement_groups?detail=1"))
    assert "GenerationWorker" in shown or "MapBatches" in shown  # the job's actors are there to be scanned
    leaks = _scan([tmp_path / "out", Path(ray_head["temp_dir"])], secrets_)
    leaks += [f"{name} in the dashboard's State API" for name, value in secrets_.items() if value in shown]
    leaks += [f"{name} in the job's stderr" for name, value in secrets_.items() if value in stderr]
    assert not leaks, leaks


def test_a_secret_travels_by_reference_not_in_the_pickled_arguments(ray_address, monkeypatch):
    import cloudpickle
    import ray

    value = f"sk-ref-{secrets.token_hex(16)}"
    monkeypatch.setenv("UC_DRIVER_ONLY_KEY", value)
    ray.shutdown()
    ray.init(address=ray_address)
    try:
        handle = SecretEnv({"UC_DRIVER_ONLY_KEY": value})
        assert value.encode() not in cloudpickle.dumps(handle) and value not in repr(handle)

        @ray.remote(num_cpus=0)
        def apply_in_a_worker(env: SecretEnv) -> tuple[str | None, str | None]:
            before = os.environ.get("UC_DRIVER_ONLY_KEY")
            env.apply()
            return before, os.environ.get("UC_DRIVER_ONLY_KEY")

        assert ray.get(apply_in_a_worker.remote(handle)) == (None, value)
    finally:
        ray.shutdown()


def test_a_local_job_runs_token_auth_with_a_private_token_file_and_leaks_nothing(tmp_path):
    """What `make demo` and every local job do on a user's machine: nothing set, token auth on anyway."""
    home = tmp_path / "home"
    home.mkdir()
    ray_tmp = tempfile.mkdtemp(prefix="ucsec-", dir="/tmp")  # short: Ray's socket paths have a 107-byte limit
    key = f"sk-local-{secrets.token_hex(16)}"
    with FakeOpenAIServer() as server:
        server.behavior.required_api_key = key
        config = openai_config(tmp_path, server, limit=2, chat_extra={"api_key_env": PROBE_KEY_ENV})
        env = _without_auth(dict(os.environ))
        env.update(HOME=str(home), **{PROBE_KEY_ENV: key})
        code, summary, _, stderr = run_job_locally(["jobs/generate.py", "--config", str(config)], ray_tmp,
                                                   env_replace=env)
    try:
        _check_local_run(code, summary, stderr, home, tmp_path / "out", Path(ray_tmp), key)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _check_local_run(code, summary, stderr, home: Path, out: Path, ray_tmp: Path, key: str) -> None:
    assert code == 0, stderr[-3000:]
    assert summary["ray"]["auth"] == "token" and summary["ray"]["address"].startswith("127.0.0.1:")
    token_file = home / ".ray" / "auth_token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600, oct(token_file.stat().st_mode)
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    token = token_file.read_text().strip()
    assert len(token) == 64
    leaks = _scan([out, ray_tmp, home], {"api key": key, "ray token": token}, skip={token_file})
    leaks += [f"{name} in the job's stderr" for name, value in (("api key", key), ("ray token", token))
              if value in stderr]
    assert not leaks, leaks
