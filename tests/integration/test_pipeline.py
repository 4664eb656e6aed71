"""`jobs/pipeline.py` with the shipped local config (what `make demo` runs), on a private local Ray.

One failed run, then one that finishes the rest: generate -> stats -> train
-> export -> serve -> a chat reply -> evaluate (the fine-tune against its base, judged by the base), each
stage skipping what an earlier run finished. The config's
model is the real SmolLM2-135M-Instruct, so the checks on words are real: the served fine-tune
answers a factual question, and simulated user turns read as a user's by the platform's own filter.
"""

import json
import shutil
import socket
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from ports import free_port
from ultrachat.config.generation import Filters
from ultrachat.generation.filters import apply_filters
from processes import kill_processes_using, run_job_locally

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "pipeline" / "local.yaml"


@pytest.fixture(scope="module")
def pipeline_run(smollm2_model_dir, tmp_path_factory):
    """Runs the pipeline job like a terminal does, in its own Ray temp dir, and stops all it started."""
    out = tmp_path_factory.mktemp("pipeline") / "out"
    # Short: Ray's unix sockets live under it (107-byte limit).
    ray_tmp = tempfile.mkdtemp(prefix="ucpipe-", dir="/tmp")
    port, direct_port = free_port(), free_port()
    base = [f"output_dir={out}", f"serve.port={port}", f"serve.direct_port={direct_port}"]

    def run(*overrides: str) -> tuple[int, dict, str]:
        code, summary, stdout, stderr = run_job_locally(
            ["jobs/pipeline.py", "--config", str(CONFIG), *base, *overrides], ray_tmp)
        assert summary, f"no JSON summary last (exit {code}):\n{stdout[-3000:]}\n{stderr[-6000:]}"
        return code, summary, stderr

    try:
        yield {"run": run, "out": out, "direct_port": direct_port}
    finally:
        kill_processes_using(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_the_pipeline_resumes_after_a_failure_and_ends_with_a_served_reply(pipeline_run):
    out = pipeline_run["out"]
    # Run 1 fails in the train stage (its workers would leave no CPU to feed them) after generating.
    # Pairwise judging only, for time: the 1-10 protocol runs against the fake server in test_evaluate.
    code, summary, stderr = pipeline_run["run"]("train.cpus_per_worker=1", "evaluate.protocols=[pairwise]")
    assert code == 2 and summary["status"] == "bad_input", stderr[-4000:]
    assert "cpus_per_worker" in summary["error"] and "Fix:" in summary["error"]
    generated = pq.read_table(out / "generate" / "dialogues")
    assert generated.num_rows == 12  # the shipped demo openings
    assert set(generated.column("sector").to_pylist()) == {"I", "II", "III"}
    assert not (out / "train" / "export").exists()
    # The stats stage ran between them: the paper's table for these dialogues.
    stats = json.loads((out / "stats" / "stats.json").read_text())
    assert stats["overall"]["dialogues"]["value"] == generated.to_pydict()["status"].count("kept")
    assert stats["overall"]["coherence"] is None and stats["overall"]["mtld"]["value"] > 0
    assert "| UltraChat | 1,468,352" in (out / "stats" / "report.md").read_text()

    # Run 2: the same command without the mistake finishes the rest.
    # 1 of the 10 prompts, for time (the whole protocol on the shipped set: test_evaluate, bench/evaluation.py).
    code, summary, stderr = pipeline_run["run"]("evaluate.protocols=[pairwise]", "evaluate.prompts.limit=1")
    assert code == 0, stderr[-6000:]
    stages = summary["counts"]["stages"]
    assert stages["generate"]["skipped"] and stages["generate"]["already_done"] == 12
    assert not stages["train"]["skipped"] and stages["train"]["total_steps"] >= 1
    assert stages["train"]["data"]["train_dialogues"] == generated.to_pydict()["status"].count("kept")
    assert stages["stats"]["embedded_now"] == 0  # the first run's embeddings, from the cache
    serve = stages["serve"]
    assert serve["base_url"] == f"http://127.0.0.1:{pipeline_run['direct_port']}/v1"
    assert "tokyo" in serve["reply"].lower(), serve["reply"]  # "What is the capital of Japan?", greedy
    assert serve["stopped"]
    for stage in ("1/5: generate", "2/5: stats", "3/5: train", "4/5: serve", "5/5: evaluate"):
        assert f"stage {stage}" in stderr
    assert "step 1 | loss" in stderr  # training progress, followed from metrics.jsonl on the driver
    # A reader's terminal: the workers' output stays in Ray's log files, teardown leaves no traceback.
    assert "Traceback" not in stderr and "(MapWorker" not in stderr and "resolved config:\n" not in stderr

    # Every artifact the report names exists, and the report ends with the reply.
    artifacts = summary["counts"]["artifacts"]
    export = Path(artifacts["model"])
    assert export == out / "train" / "export" and (export / "config.json").is_file()
    assert json.loads((export / "ultrachat_export.json").read_text())["steps"] == stages["train"]["total_steps"]
    for key in ("dialogues", "dialogues_jsonl", "stats_report", "stats_json", "checkpoints", "train_metrics"):
        assert Path(artifacts[key]).exists(), key
    for path in artifacts["resolved_configs"]:
        assert yaml.safe_load(Path(path).read_text())["output_dir"].startswith(str(out))
    report = stderr[stderr.index("pipeline finished"):]
    assert str(export) in report and f"reply:             {serve['reply']!r}" in report
    assert "one dialogue:" in report and "assistant: " in report
    assert f"the paper's table beside it: {out / 'stats' / 'report.md'}" in report

    # The evaluate stage: both served models answered the prompt, the 135M judge's verdicts were asked
    # for as schema-constrained JSON, and the report says plainly how little they mean.
    evaluate = stages["evaluate"]
    assert evaluate["prompts"] == 1 and evaluate["calls"]["answers"]["ok"] == 2
    judgments = evaluate["calls"]["judgments"]
    assert judgments["failed"] == 0 and judgments["ok"] + judgments["unparseable"] == judgments["planned"]
    results = json.loads(Path(artifacts["evaluation_report"]).with_name("results.json").read_text())
    assert results["candidates"]["fine-tuned"]["model"] == "ultrallama-smollm2"
    assert results["judge"]["schema_constrained"] == results["judge"]["judged"] > 0
    assert all(a["text"].strip() for p in results["per_prompt"] for a in p["answers"].values())
    evaluation = Path(artifacts["evaluation_report"]).read_text()
    assert "far too weak" in evaluation and f"{results['judge']['parsed']} of {results['judge']['planned']} verdicts parsed" in evaluation
    assert "model quality:" in report and str(artifacts["evaluation_report"]) in report

    with socket.socket() as sock:  # the server was stopped after the evaluation
        assert sock.connect_ex(("127.0.0.1", pipeline_run["direct_port"])) != 0

    # Real words: some simulated user turn after the opening is a user's, not the helper's voice.
    user_turns = [m["content"] for messages in generated.column("messages").to_pylist()
                  for m in messages[2::2] if m["role"] == "user"]
    assert any(turn.strip() and not apply_filters(
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
         {"role": "user", "content": turn}, {"role": "assistant", "content": "Sure."}],
        [None, "stop", None, "stop"], Filters(length_cut=False)).reasons for turn in user_turns), user_turns
