"""The job contract, through the real entry points: exit codes and the JSON summary as the last line."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(*args, cwd=REPO):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def last_json(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


def test_help_lists_every_command():
    result = run("-m", "ultrachat", "--help")
    assert result.returncode == 0
    for command in ("generate", "stats", "train", "serve", "evaluate", "preferences", "pipeline", "check-config",
                    "tiny-model", "doctor"):
        assert command in result.stdout


def test_invalid_config_exits_2_with_every_problem_on_stderr_and_in_the_summary(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("output_dir: o\nmodel: tiny:small\ndata: {paths: [x]}\nnum_workrs: 2\nzero_stage: 4\n")
    result = run("jobs/train.py", "--config", str(bad), "epochs=-1")
    summary = last_json(result.stdout)
    assert result.returncode == 2 and summary["status"] == "invalid_config"
    for expected in ("line 4: unknown key 'num_workrs': did you mean 'num_workers'?",
                     "line 5: key 'zero_stage'", "override 'epochs=-1'"):
        assert expected in summary["error"] and expected in result.stderr


def test_missing_config_file_exits_2():
    result = run("jobs/generate.py", "--config", "configs/generate/nope.yaml")
    assert result.returncode == 2 and "does not exist" in last_json(result.stdout)["error"]


def test_check_config_prints_the_resolved_config():
    result = run("-m", "ultrachat", "check-config", "--config", "configs/serve/local.yaml", "port=8090")
    assert result.returncode == 0, result.stderr
    assert "port: 8090" in result.stdout and "namespace: ultrachat" in result.stdout


def test_tiny_model_refuses_a_non_empty_foreign_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = run("-m", "ultrachat", "tiny-model", "--out", str(tmp_path))
    assert result.returncode == 1 and "not empty" in last_json(result.stdout)["error"]
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_local_runs_get_loopback_defaults_before_ray_is_imported():
    # Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, at import; without it a local Ray binds the
    # machine's outward address instead of 127.0.0.1.
    code = ("from ultrachat.cli import main\n"
            "main(['check-config', '--config', 'configs/generate/local.yaml'])\n"
            "import os, ray._private.ray_constants as c\n"
            "print(c.ENABLE_RAY_CLUSTER, os.environ['VLLM_HOST_IP'])\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "VLLM_HOST_IP")}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False 127.0.0.1"
