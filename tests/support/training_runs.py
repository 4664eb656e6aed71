"""Running the train job from tests: shared by the training tests and the serving tests (which serve its export)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from ultrachat.models.tiny import corpus_dialogues

REPO = Path(__file__).resolve().parents[2]


def start_train(config: Path, *overrides, env_extra=None) -> subprocess.Popen:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.Popen([sys.executable, str(REPO / "jobs" / "train.py"), "--config", str(config), *overrides],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_train(process: subprocess.Popen, timeout=900):
    """(exit code, the JSON summary or None, stderr)."""
    stdout, stderr = process.communicate(timeout=timeout)
    lines = stdout.strip().splitlines()
    return process.returncode, (json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None), stderr


def run_train(config: Path, *overrides, env_extra=None, timeout=900):
    return finish_train(start_train(config, *overrides, env_extra=env_extra), timeout)


def logged_steps(out: Path) -> int:
    """How many metric lines the run has logged so far."""
    path = out / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


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


def write_preferences(path: Path, count: int = 48) -> Path:
    """Preference pairs (the ultrafeedback_binarized layout) with a learnable rule: over the shipped
    dialogues' questions, the chosen answer opens with "Certainly." and the rejected one with "No.";
    the rest of both answers is the same text."""
    lines = []
    for i, messages in enumerate((corpus_dialogues() * 4)[:count]):
        question = f"{messages[0]['content']} (case {i})"
        body = messages[1]["content"][:120]
        prompt = [{"role": "user", "content": question}]
        lines.append(json.dumps({
            "prompt": question, "prompt_id": f"p{i}",
            "chosen": prompt + [{"role": "assistant", "content": f"Certainly. {body}"}],
            "rejected": prompt + [{"role": "assistant", "content": f"No. {body}"}],
            "score_chosen": 9.0, "score_rejected": 2.0}))
    path.write_text("\n".join(lines) + "\n")
    return path
