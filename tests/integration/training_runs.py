"""Running the train job from tests: shared by the training tests and the serving tests (which serve its export)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from ultrachat.models.tiny import corpus_dialogues

REPO = Path(__file__).resolve().parents[2]
FAULT_ENV = "ULTRACHAT_TRAIN_KILL_WORKER_AT_STEP"


def run_train(config: Path, *overrides, env_extra=None, timeout=900):
    env = {**os.environ, **(env_extra or {})}
    done = subprocess.run([sys.executable, str(REPO / "jobs" / "train.py"), "--config", str(config), *overrides],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in done.stdout.strip().splitlines() if line.startswith("{")]
    return done.returncode, (json.loads(lines[-1]) if lines else None), done.stderr


def write_data(path: Path, count: int = 60) -> Path:
    """Generation-style records (kept and filtered), ShareGPT records and one malformed line."""
    lines = []
    for i, messages in enumerate(corpus_dialogues()[:count]):
        if i % 3 == 2:
            turns = [{"from": "human" if m["role"] == "user" else "gpt", "value": m["content"]} for m in messages]
            lines.append(json.dumps({"conversations": turns}))
        else:
            lines.append(json.dumps({"id": str(i), "messages": messages, "status": "kept"}))
    lines.append(json.dumps({"id": "f", "messages": corpus_dialogues()[0], "status": "filtered:too_short"}))
    lines.append("{not json")
    path.write_text("\n".join(lines) + "\n")
    return path


def train_config(tmp_path: Path, data_path: Path, eval_fraction: float = 0.0, **extra) -> Path:
    config = {"output_dir": str(tmp_path / "out"), "run_name": "test-train", "model": "tiny:small",
              "data": {"paths": [str(data_path)], "eval_fraction": eval_fraction}, "max_seq_len": 256, "num_workers": 2, "cpus_per_worker": 0.5,
              "zero_stage": 2, "global_batch_size": 8, "micro_batch_size": 2, "learning_rate": 1e-4, "epochs": 1,
              "log_every_steps": 2, "checkpoint_every_steps": 3, "keep_checkpoints": 2, **extra}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def metrics_by_step(out: Path) -> dict[int, dict]:
    """The last logged entry per step (after a restart, resumed steps are logged again)."""
    entries = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {entry["step"]: entry for entry in entries}
