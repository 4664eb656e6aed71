"""The platform's Ray metrics reach Prometheus under the names docs/design.md documents, and its jobs,
data sets and actors carry recognisable names in the dashboard.

Everything is read where an operator would read it: the head's metrics agent (the endpoint Prometheus
scrapes, ``ray start --metrics-export-port``) and the dashboard's REST API. Ray exports a process's
metrics every ``metrics_report_interval_ms`` (10 s), so each check polls with a bound. Series are
told apart from other tests' by their ``run`` label.
"""

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from generate_runs import REPO, openai_config
from ultrachat.devtools.fake_openai import FakeBehavior, FakeOpenAIServer
from ultrachat.observability import API_RETRIES, API_WAIT_SECONDS, DIALOGUES, LLM_TOKENS, TRAIN_LOSS, \
    TRAIN_TOKENS, TRAIN_TOKENS_PER_SECOND

GEN_RUN = "metrics-gen"
TRAIN_RUN = "test-train"  # the `trained` fixture's run_name (training_runs.train_config)


def scrape(url: str) -> list:
    """Every sample the metrics agent serves now (prometheus_client's parser: what Prometheus reads)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def total(samples, spec, **labels) -> float:
    return sum(s.value for s in samples
               if s.name == spec.prometheus_name and all(s.labels.get(k) == v for k, v in labels.items()))


def label_values(samples, spec, label: str, **labels) -> set:
    return {s.labels.get(label) for s in samples
            if s.name == spec.prometheus_name and all(s.labels.get(k) == v for k, v in labels.items())}


def poll(url: str, done, timeout_s: float = 90.0) -> list:
    """Scrape until ``done(samples)``; the last scrape either way (the asserts then say what is missing)."""
    deadline = time.monotonic() + timeout_s
    while True:
        samples = scrape(url)
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(2)


def dashboard_json(dashboard: str, path: str):
    request = urllib.request.Request(f"{dashboard}{path}",
                                     headers={"Authorization": f"Bearer {os.environ['RAY_AUTH_TOKEN']}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def generate_config(tmp_path: Path, server) -> Path:
    # The rate limit is shared by both roles in an actor: concurrent dialogues must queue for it.
    return openai_config(tmp_path, server, limit=12, chat_extra={"requests_per_minute": 1200}, run_name=GEN_RUN)


@pytest.fixture(scope="module")
def generated(ray_head, tmp_path_factory):
    """One generate job against the fake API with injected 429s and a 500; its summary and faults."""
    tmp = tmp_path_factory.mktemp("metrics-gen")
    env = {**os.environ, "RAY_ADDRESS": ray_head["address"], "UC_FAKE_KEY": "test-key"}
    with FakeOpenAIServer(FakeBehavior(retry_after_s=0.2)) as server:
        server.add_faults("429", "500", "429")
        done = subprocess.run([sys.executable, str(REPO / "jobs" / "generate.py"), "--config",
                               str(generate_config(tmp, server))], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=900)
        faults = dict(server.stats.faults)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    return {"counts": summary["counts"], "faults": faults}


def test_generation_metrics_reach_prometheus(ray_head, generated):
    counts, faults = generated["counts"], generated["faults"]
    run = {"run": GEN_RUN}
    samples = poll(ray_head["metrics"], lambda s: total(s, DIALOGUES, **run) >= counts["dialogues"]
                   and total(s, API_RETRIES, **run) >= sum(faults.values()))

    # Every dialogue once, under the outcome its record has (no actor was killed, so nothing was redone).
    assert total(samples, DIALOGUES, **run) == counts["dialogues"] == 12
    for status in ("kept", "filtered", "failed", "invalid"):
        assert total(samples, DIALOGUES, status=status, **run) == counts.get(f"status_{status}", 0), status
    assert total(samples, DIALOGUES, status="kept", reason="", **run) == counts["status_kept"]
    assert label_values(samples, DIALOGUES, "sector", **run) <= {"I", "II", "III"}

    # Tokens per role add up to the summary's totals (the records' usage columns).
    assert label_values(samples, LLM_TOKENS, "role", **run) == {"user", "assistant"}
    assert total(samples, LLM_TOKENS, kind="prompt", **run) == counts["tokens_in"] > 0
    assert total(samples, LLM_TOKENS, kind="completion", **run) == counts["tokens_out"] > 0
    assert total(samples, LLM_TOKENS, role="user", kind="completion", **run) > 0

    # One retry per injected fault, by its reason; the 429s' Retry-After (0.2 s) is a floor on backoff.
    assert faults == {"429": 2, "500": 1}
    assert total(samples, API_RETRIES, reason="http_429", **run) == 2
    assert total(samples, API_RETRIES, reason="http_500", **run) == 1
    assert total(samples, API_WAIT_SECONDS, cause="backoff", **run) >= 0.4
    # ~60 requests through a 1200 rpm limiter (one every 50 ms) from concurrent dialogues must wait.
    assert total(samples, API_WAIT_SECONDS, cause="rate_limiter", **run) > 0.1

    # Ray's own labels ride along: a Grafana panel can split by node or session.
    one = next(s for s in samples if s.name == DIALOGUES.prometheus_name and s.labels.get("run") == GEN_RUN)
    assert {"NodeAddress", "SessionName", "WorkerId"} <= set(one.labels), one.labels


def test_generation_is_named_in_the_dashboard(ray_head, generated):
    from ray.util.state import list_actors

    jobs = dashboard_json(ray_head["dashboard"], "/api/jobs/")
    ours = [j for j in jobs if (j.get("metadata") or {}).get("ultrachat_run") == GEN_RUN]
    assert len(ours) == 1 and ours[0]["metadata"]["ultrachat_job"] == "generate", jobs
    datasets = dashboard_json(ray_head["dashboard"], f"/api/data/datasets/{ours[0]['job_id']}")["datasets"]
    names = {d["dataset"]: [op["operator"] for op in d["operators"]] for d in datasets}
    main = [name for name in names if name.startswith(f"ultrachat-generate-{GEN_RUN}_")]
    assert len(main) == 1, names
    assert any(op.startswith("MapBatches(DialogueWorker)") for op in names[main[0]]), names
    assert any(name.startswith(f"ultrachat-generate-{GEN_RUN}-openings_") for name in names), names
    # The progress actor is named after the run (and a random suffix, so concurrent runs never clash).
    trackers = list_actors(address=ray_head["dashboard"], filters=[("class_name", "=", "StageTracker")],
                           limit=1000, raise_on_missing_output=False)
    assert any((a.name or "").startswith(f"ultrachat-progress-{GEN_RUN}-") for a in trackers), trackers


@pytest.fixture(scope="module")
def watched_training(ray_head, request):
    """The session's train job (`trained`), scraped every 2 s while it runs.

    Ray exports a gauge only for ~2 report intervals (~20 s) after it was last set, so the train
    gauges can only be seen while the job runs: if `trained` already ran earlier in this session,
    the gauge checks are skipped (the counter is checked either way only when we saw the run)."""
    url, seen, stop = ray_head["metrics"], [], threading.Event()

    def watch():
        while not stop.wait(2):
            try:
                seen.extend(s for s in scrape(url) if s.labels.get("run") == TRAIN_RUN)
            except OSError:
                pass

    before = total(scrape(url), TRAIN_TOKENS, run=TRAIN_RUN)
    started = time.time()
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        trained = request.getfixturevalue("trained")
    finally:
        stop.set()
        thread.join(timeout=30)
    fresh = (trained["out"] / "metrics.jsonl").stat().st_mtime > started
    return {"trained": trained, "seen": seen, "before": before, "fresh": fresh}


def test_training_metrics_reach_prometheus(ray_head, watched_training):
    if not watched_training["fresh"]:
        pytest.skip("the session's train job ran before this test could watch it; its gauges are gone")
    out = watched_training["trained"]["out"]
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    seen = watched_training["seen"]
    speeds = [s.value for s in seen if s.name == TRAIN_TOKENS_PER_SECOND.prometheus_name]
    losses = [s.value for s in seen if s.name == TRAIN_LOSS.prometheus_name]
    # What rank 0 logged for an interval is what the gauge showed (no restart in this run).
    assert speeds and losses, "no ultrachat train gauge was seen while the train job ran"
    assert all(any(v == pytest.approx(e["tokens_per_s"], rel=1e-9) for e in logged) for v in speeds), speeds
    assert all(any(v == pytest.approx(e["loss"], rel=1e-9) for e in logged) for v in losses), losses
    # The counter outlives the workers: every interval's tokens, the run's total.
    final = logged[-1]["tokens"]
    samples = poll(ray_head["metrics"],
                   lambda s: total(s, TRAIN_TOKENS, run=TRAIN_RUN) - watched_training["before"] >= final)
    assert total(samples, TRAIN_TOKENS, run=TRAIN_RUN) - watched_training["before"] == final > 0
