"""The metrics helpers: no-ops without Ray, stable Prometheus names, and documented ones."""

import re
import subprocess
import sys
from pathlib import Path

from ultrachat import observability
from ultrachat.observability import COUNTER, METRICS, actor_name, dataset_name

REPO = Path(__file__).resolve().parents[2]


def test_recording_without_ray_is_a_silent_no_op():
    # A fresh interpreter: recording must neither import Ray nor make a metric, and never raise.
    code = """
import sys
from ultrachat import observability as o
o.set_run("r")
o.record_dialogues([{"status": "kept", "sector": "I"}, {"status": "failed:timeout", "sector": "II"}])
o.record_tokens("user", 10, 0)
o.record_construction_calls([{"stage": "subtopics", "status": "ok"}])
o.record_retry("http_429", 0.5)
o.record_rate_limit_wait(1.0)
o.record_training_interval({"interval_tokens": 100, "tokens_per_s": 5.0, "loss": 2.0})
assert "ray" not in sys.modules, "recording imported ray"
assert o._made is None and not o._disabled
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_metric_names_are_stable_and_valid():
    names = [spec.name for spec in METRICS]
    assert len(set(names)) == len(names)
    for spec in METRICS:
        assert re.fullmatch(r"ultrachat_[a-z_]+", spec.name), spec.name
        assert not spec.name.endswith("_total"), "Prometheus adds _total to counters itself"
        assert spec.tags[0] == "run" and len(spec.tags) == len(set(spec.tags)) <= 4
        expected = f"ray_{spec.name}_total" if spec.kind == COUNTER else f"ray_{spec.name}"
        assert spec.prometheus_name == expected
    assert observability.DIALOGUES.prometheus_name == "ray_ultrachat_dialogues_total"
    assert observability.TRAIN_TOKENS_PER_SECOND.prometheus_name == "ray_ultrachat_train_tokens_per_second"


def test_every_metric_is_documented_with_its_labels():
    design = (REPO / "docs" / "design.md").read_text()
    section = design.split("## Observability", 1)[1].split("\n## ", 1)[0]
    for spec in METRICS:
        row = next((line for line in section.splitlines() if f"`{spec.prometheus_name}`" in line), None)
        assert row is not None, f"{spec.prometheus_name} is not in docs/design.md's Observability table"
        assert all(f"`{tag}`" in row for tag in spec.tags), (spec.tags, row)


def test_dashboard_names():
    assert dataset_name("generate", "nightly") == "ultrachat-generate-nightly"
    assert dataset_name("generate", None, "jsonl") == "ultrachat-generate-jsonl"
    assert dataset_name("construct", "r1", "wave2") == "ultrachat-construct-r1-wave2"
    assert actor_name("progress", "my run/1", "ab12") == "ultrachat-progress-my-run-1-ab12"
    assert actor_name("progress", None, "ab12") == "ultrachat-progress-ab12"
    assert observability.run_label(None, "train") == "train" and observability.run_label("x", "train") == "x"
