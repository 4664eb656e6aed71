"""Evaluation benchmark: the evaluate job's answer and judge throughput against its ideal.

Run from the repo root::

    .venv/bin/python bench/evaluation.py                  # C = 64, L = 0.5 s, the paper's 385 prompts x 3
    .venv/bin/python bench/evaluation.py --concurrency 32 --latency 0.25 --quick

The fake OpenAI-compatible server (``python -m ultrachat.devtools.fake_openai``) runs in its own process
on 127.0.0.1 and answers every request after a fixed latency L, with replies that are both a pairwise
verdict and a 1-10 score (so every judgment parses and nothing is asked twice; two variants served in
turn, so the two candidates' answers usually differ and their pairs are judged). ``jobs/evaluate.py``
runs as a subprocess (a private local Ray) with two candidates and the judge on that server. The
prompts are the paper's 385, each repeated ``--repeat`` times with a variant tag (distinct content, so
the content-keyed cache dedups nothing): 2N answers, then up to 4N judgments.

C is the endpoints' concurrency cap, which bounds the calls in flight: ``max_concurrency`` C/2 per
candidate (both answer in the first wave) and C for the judge (alone in the second). The one actor
holds ``--hold`` x C calls (calls_per_batch x batches_in_flight, default 2C in batches of 64), so the
caps stay busy while Ray Data hands over the next batch: the setting docs/evaluation.md recommends. The ideal rate is C/L calls/s. Achieved, per
wave = its calls / its window (first call's start to last call's end, from the cache records). Goal:
achieved / (C/L) >= 0.9, the bar the generation job meets. The job's wall time (Ray start, planning,
report) is reported beside it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from generation import kill_group, run_job, start_fake_server, stop_fake_server

logger = logging.getLogger("bench.evaluation")
VERDICTS = ('{"reason": "benchmark", "verdict": "A", "score": 7}', '{"reason": "bench", "verdict": "B", "score": 6}')


def wave_stats(directory: Path) -> dict:
    import pyarrow.parquet as pq

    rows = [r for shard in sorted(directory.glob("part-*.parquet"))
            for r in pq.read_table(shard, columns=["status", "started_at", "seconds"]).to_pylist()]
    start = min(r["started_at"] for r in rows)
    end = max(r["started_at"] + r["seconds"] for r in rows)
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    return {"calls": len(rows), "window_s": end - start, "statuses": statuses,
            "mean_call_s": sum(r["seconds"] for r in rows) / len(rows)}


def write_prompts(path: Path, repeat: int, limit: int | None) -> int:
    """The paper's prompts, each ``repeat`` times with a variant tag: distinct content, same shape."""
    from ultrachat.config.evaluation import PromptSet
    from ultrachat.evaluation.prompts import load_prompts

    prompts = load_prompts(PromptSet())[:limit]
    with path.open("w") as handle:
        for k in range(repeat):
            for p in prompts:
                messages = [{"role": r, "content": c} for r, c in p.messages]
                messages[-1]["content"] += f" (variant {k})"
                handle.write(json.dumps({"id": f"{p.id}-v{k}", "class": p.klass, "messages": messages}) + "\n")
    return len(prompts) * repeat


def run(args, work: Path) -> dict:
    count = write_prompts(work / "prompts.jsonl", args.repeat, args.prompts)
    server, base_url, server_log = start_fake_server(work, args.latency, *(a for v in VERDICTS for a in ("--reply", v)))
    try:
        in_actor = args.hold * args.concurrency
        batches = max(1, in_actor // args.calls_per_batch)
        chat = {"backend": "openai", "base_url": base_url, "model": "fake-model", "api_key_env": None, "timeout_s": 60}
        config = {
            "output_dir": str(work / "out"), "run_name": "bench-evaluation", "log_level": "INFO",
            # Workers at nice 0, as bench/serving.py: on 2 cores the fake server (nice 0) would otherwise
            # starve the actor (Ray's default nice 15), a contention a remote API never causes.
            "ray": {"local_num_cpus": 2, "data_progress": False, "local_worker_niceness": args.worker_niceness},
            "prompts": {"path": str(work / "prompts.jsonl")},
            "candidates": [{"name": name, "chat": {**chat, "max_concurrency": max(1, args.concurrency // 2)},
                            "system_prompt": f"You are {name}.", "sampling": {"max_tokens": 64}}
                           for name in ("new", "old")],
            "judge": {"chat": {**chat, "max_concurrency": args.concurrency},
                      "sampling": {"temperature": 0, "max_tokens": 64}},
            "baseline": "old", "plots": False,
            "actors": {"min_actors": 1, "max_actors": 1, "num_cpus": args.actor_cpus,
                       "calls_per_batch": args.calls_per_batch, "batches_in_flight": batches},
        }
        job = run_job(config, work, "evaluate", args.timeout, job="evaluate")
    finally:
        requests = stop_fake_server(server, server_log)
        kill_group(server)
    ideal = args.concurrency / args.latency
    waves = {name: wave_stats(work / "out" / "cache" / name) for name in ("answers", "judgments")}
    for stats in waves.values():
        stats["achieved_cps"] = stats["calls"] / stats["window_s"]
        stats["ratio"] = stats["achieved_cps"] / ideal
    calls = sum(w["calls"] for w in waves.values())
    combined = calls / sum(w["window_s"] for w in waves.values())
    return {"latency_s": args.latency, "concurrency": args.concurrency, "in_actor": batches * args.calls_per_batch,
            "prompts": count, "ideal_cps": ideal,
            "waves": waves, "combined_cps": combined, "combined_ratio": combined / ideal, "goal": 0.9,
            "server_requests": requests, "job_wall_s": job["wall_s"],
            "job_calls_per_s_wall": calls / job["wall_s"], "summary": job["summary"]["counts"]["calls"]}


def markdown(r: dict) -> str:
    rows = wave_rows(r)
    rows.append(f"\nC = {r['concurrency']} (the endpoints' caps; {r['in_actor']} calls held by the actor), "
                f"L = {r['latency_s']} s, {r['prompts']} prompts; whole job {r['job_wall_s']:.1f} s wall "
                f"({r['job_calls_per_s_wall']:.1f} calls/s including Ray start, planning and the report); "
                f"fake server requests: {r['server_requests']}")
    return "\n".join(rows)


def wave_rows(r: dict) -> list[str]:
    """The per-wave table (and its total) of a waves benchmark's result: evaluation's or preferences'."""
    rows = ["| wave | calls | window s | calls/s | ideal C/L | ratio | goal | met |", "|---|---|---|---|---|---|---|---|"]
    for name, w in r["waves"].items():
        rows.append(f"| {name} | {w['calls']} | {w['window_s']:.2f} | {w['achieved_cps']:.1f} | {r['ideal_cps']:.1f} | "
                    f"{w['ratio']:.3f} | >= {r['goal']} | {'yes' if w['ratio'] >= r['goal'] else '**no**'} |")
    total = sum(w["calls"] for w in r["waves"].values())
    rows.append(f"| both | {total} | {sum(w['window_s'] for w in r['waves'].values()):.2f} | {r['combined_cps']:.1f} | "
                f"{r['ideal_cps']:.1f} | {r['combined_ratio']:.3f} | >= {r['goal']} | "
                f"{'yes' if r['combined_ratio'] >= r['goal'] else '**no**'} |")
    return rows


def main(argv=None) -> int:
    return run_waves_bench(argv, __doc__, "evaluation", run, markdown)


def run_waves_bench(argv, doc: str, name: str, run_fn, markdown_fn) -> int:
    """The command line of a waves benchmark (this one, bench/preferences.py): parse, run against the fake
    server in a temp dir, write ``<name>_results.json`` and print the table."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.5, help="fake server latency L in seconds")
    parser.add_argument("--concurrency", type=int, default=64, help="C: calls in flight")
    parser.add_argument("--calls-per-batch", type=int, default=64)
    parser.add_argument("--actor-cpus", type=float, default=0, help="num_cpus of the one actor (the job's default: 0)")
    parser.add_argument("--prompts", type=int, default=None, help="first N of the paper's 385 (default all)")
    parser.add_argument("--hold", type=int, default=2, help="calls the actor holds, in multiples of C")
    parser.add_argument("--worker-niceness", type=int, default=0, help="nice of the local Ray's workers (Ray: 15)")
    parser.add_argument("--repeat", type=int, default=5, help="each prompt this many times (distinct variants)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 40 prompts, once")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--out", default=f"{name}_results.json")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.prompts, args.repeat = args.prompts or 40, 1
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    work = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    try:
        result = run_fn(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    result = {"machine": {"cpus": os.cpu_count()}, "args": vars(args), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              **result}
    Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(markdown_fn(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
