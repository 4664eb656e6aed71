"""Preferences benchmark: the preferences job's completion and rating throughput against its ideal.

Run from the repo root::

    .venv/bin/python bench/preferences.py                 # C = 64, L = 0.5 s, 385 x 5 prompts x 4 completions
    .venv/bin/python bench/preferences.py --concurrency 32 --latency 0.25 --quick

The fake OpenAI-compatible server (``python -m ultrachat.devtools.fake_openai``) runs in its own process
on 127.0.0.1 and answers every request after a fixed latency L. Its replies (four variants, served in
turn) are aspect ratings in the judge's JSON, with different scores, so every rating parses on the first
ask (nothing is asked twice) and most prompts binarize into a pair; as completions they are just text.
``jobs/preferences.py`` runs as a subprocess (a private local Ray) with a pool of two completion models
and the judge on that server. Prompts: the paper's 385 evaluation prompts, each ``--repeat`` times with
a variant tag (distinct content, so the content-keyed cache dedups nothing): 4N completions, then 4N
ratings.

C is the endpoints' concurrency cap, which bounds the calls in flight: ``max_concurrency`` C/2 per
completion model (both answer in the first wave) and C for the judge (alone in the second). The one
actor holds ``--hold`` x C calls, as bench/evaluation.py. The ideal rate is C/L calls/s; achieved,
per wave = its calls / its window (first call's start to last call's end, from the cache records).
Goal: achieved / (C/L) >= 0.9. The job's wall time (Ray start, planning, binarization, writing) is
reported beside it.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from evaluation import run_waves_bench, wave_rows, wave_stats, write_prompts
from generation import kill_group, run_job, start_fake_server, stop_fake_server

logger = logging.getLogger("bench.preferences")
ASPECTS = ("instruction_following", "honesty", "truthfulness", "helpfulness")
# Four variants: a prompt's 4 completions usually differ, so none of their ratings is deduplicated by the
# content-keyed cache (two variants halved the ratings wave, and a short wave is mostly ramp and tail).
RATINGS = tuple(json.dumps({a: {"rationale": "benchmark", "rating": score} for a in ASPECTS}) for score in (5, 4, 3, 2))


def run(args, work: Path) -> dict:
    count = write_prompts(work / "prompts.jsonl", args.repeat, args.prompts)
    server, base_url, server_log = start_fake_server(work, args.latency, *(a for r in RATINGS for a in ("--reply", r)))
    try:
        in_actor = args.hold * args.concurrency
        batches = max(1, in_actor // args.calls_per_batch)
        chat = {"backend": "openai", "base_url": base_url, "model": "fake-model", "api_key_env": None, "timeout_s": 60}
        config = {
            "output_dir": str(work / "out"), "run_name": "bench-preferences", "log_level": "INFO",
            # Workers at nice 0, as bench/evaluation.py: a remote API never competes with the actor for CPU.
            "ray": {"local_num_cpus": 2, "data_progress": False, "local_worker_niceness": args.worker_niceness},
            "prompts": {"paths": [str(work / "prompts.jsonl")], "cut": "last"},
            "completions_per_prompt": 4,
            "models": [{"name": name, "chat": {**chat, "max_concurrency": max(1, args.concurrency // 2)},
                        "sampling": {"max_tokens": 64}} for name in ("pool-a", "pool-b")],
            "judge": {"chat": {**chat, "max_concurrency": args.concurrency},
                      "sampling": {"temperature": 0, "max_tokens": 256}, "structured_output": "text"},
            "actors": {"min_actors": 1, "max_actors": 1, "num_cpus": args.actor_cpus,
                       "calls_per_batch": args.calls_per_batch, "batches_in_flight": batches},
        }
        job = run_job(config, work, "preferences", args.timeout, job="preferences")
    finally:
        requests = stop_fake_server(server, server_log)
        kill_group(server)
    ideal = args.concurrency / args.latency
    waves = {name: wave_stats(work / "out" / "cache" / name) for name in ("completions", "ratings")}
    for stats in waves.values():
        stats["achieved_cps"] = stats["calls"] / stats["window_s"]
        stats["ratio"] = stats["achieved_cps"] / ideal
    calls = sum(w["calls"] for w in waves.values())
    combined = calls / sum(w["window_s"] for w in waves.values())
    counts = job["summary"]["counts"]
    return {"latency_s": args.latency, "concurrency": args.concurrency, "in_actor": batches * args.calls_per_batch,
            "prompts": count, "ideal_cps": ideal, "waves": waves, "combined_cps": combined,
            "combined_ratio": combined / ideal, "goal": 0.9, "server_requests": requests, "job_wall_s": job["wall_s"],
            "job_calls_per_s_wall": calls / job["wall_s"], "pairs": counts["pairs"], "calls": counts["calls"]}


def markdown(r: dict) -> str:
    rows = wave_rows(r)
    rows.append(f"\nC = {r['concurrency']} (the endpoints' caps; {r['in_actor']} calls held by the actor), "
                f"L = {r['latency_s']} s, {r['prompts']} prompts x 4 completions, {r['pairs']} pairs; whole job "
                f"{r['job_wall_s']:.1f} s wall ({r['job_calls_per_s_wall']:.1f} calls/s including Ray start, "
                f"planning, binarization and writing); fake server requests: {r['server_requests']}")
    return "\n".join(rows)


def main(argv=None) -> int:
    return run_waves_bench(argv, __doc__, "preferences", run, markdown)


if __name__ == "__main__":
    sys.exit(main())
