"""Running the generate job from tests: the config for the fake OpenAI server, start/finish a job."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "platform" / "ultrachat" / "data" / "sample_openings.jsonl"
SAMPLE_IDS = {json.loads(line)["id"] for line in SAMPLE.read_text().splitlines() if line.strip()}


def start_job(config: Path, *overrides, env_extra=None, job="generate"):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.Popen([sys.executable, str(REPO / "jobs" / f"{job}.py"), "--config", str(config), *overrides],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def finish(process, timeout=900):
    stdout, stderr = process.communicate(timeout=timeout)
    lines = [line for line in stdout.strip().splitlines() if line.startswith("{")]
    return process.returncode, (json.loads(lines[-1]) if lines else None), stderr


def run_job(config, *overrides, env_extra=None, timeout=900, job="generate"):
    return finish(start_job(config, *overrides, env_extra=env_extra, job=job), timeout)


def read_dialogues(out_dir: Path) -> pd.DataFrame:
    """Every committed record, as a resume sees them: the compacted files, or the per-batch shards a
    killed run left before compaction."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ultrachat.compaction import record_paths

    tables = [pq.read_table(path) for path in record_paths(str(out_dir / "dialogues"))]
    return pa.concat_tables(tables).to_pandas() if tables else pd.DataFrame(columns=["id", "status", "messages"])


def openai_config(tmp_path, server, openings=SAMPLE, limit=None, chat_extra=None, **extra) -> Path:
    """A generate config with both roles on the fake API ``server``; ``extra``: top-level keys."""
    chat = {"backend": "openai", "base_url": server.base_url, "model": "fake-chat", "api_key_env": "UC_FAKE_KEY",
            "max_retries": 3, "backoff_initial_s": 0.05, "backoff_max_s": 0.2, "timeout_s": 10, **(chat_extra or {})}
    config = {
        "output_dir": str(tmp_path / "out"),
        "openings": {"path": str(openings), **({"limit": limit} if limit else {})},
        "user": {"chat": chat, "sampling": {"max_tokens": 30}},
        "assistant": {"chat": chat, "sampling": {"max_tokens": 60}},
        "rounds": {"I": {"min": 2, "max": 3}, "II": {"min": 2, "max": 2}, "III": {"min": 2, "max": 2}},
        "actors": {"min_actors": 1, "max_actors": 1, "num_cpus": 0.5, "dialogues_per_batch": 4},
        **extra,
    }
    path = tmp_path / "generate.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
