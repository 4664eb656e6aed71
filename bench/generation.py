"""Generation benchmark: the real generate job, measured side by side with its ideal.

Run from the repo root (the full run is heavy: run it on an idle machine)::

    .venv/bin/python bench/generation.py                      # both parts, default sizes
    .venv/bin/python bench/generation.py --quick              # smoke run: tiny sizes, ~2-4 min
    .venv/bin/python bench/generation.py --part a --latency 0.5 --concurrency 64 --dialogues 1280
    .venv/bin/python bench/generation.py --part b --dialogues-vllm 48 --out b.json --keep

It prints a Markdown table (stdout; logs go to stderr) and writes every number to ``--out`` (JSON).

(a) Pipeline vs ideal, OpenAI backend against the fake server. The fake OpenAI-compatible server
    (``python -m ultrachat.devtools.fake_openai``) runs in its own process on 127.0.0.1 and answers
    every request after a fixed latency L. ``jobs/generate.py`` runs as a subprocess with both roles
    on that server and C = max_actors x batches_in_flight x dialogues_per_batch dialogues in flight.
    Rounds are fixed (min = max = R for every sector), so every dialogue makes 2R-1 requests and the
    batches finish together; there are many more dialogues than C (default 20 x C), so ramp-up and
    ramp-down are small. A dialogue has one request outstanding at a time, so the ideal rate is C/L
    requests/s. Achieved = generated turns / generation window, where the window is
    max(started_at + seconds) - min(started_at) over the output records. Goal: achieved / (C/L) >= 0.9
    at C = 64.

(b) Pipeline vs raw vLLM, the vLLM CPU engine with the ``tiny:small`` model (built offline on first
    use into $ULTRACHAT_CACHE or ~/.cache/ultrachat). The generate job runs N dialogues on one actor
    with every dialogue in flight. Then, in a fresh process, plain ``vllm.LLM`` gets ONE
    ``generate`` call with one request per generated turn of the pipeline: a prompt of that turn's
    prompt_tokens (token ids sampled from the vocabulary, seeded) and max_tokens = that turn's
    completion_tokens, ignore_eos, greedy. Only that call is timed. Ratio = pipeline output tokens/s
    (over the generation window as in (a)) / raw output tokens/s. Goal >= 0.8. The comparison is
    deliberately strict: the raw side gets every request at once, while a dialogue's turns are
    sequential (each turn's prompt needs the previous answer), so the pipeline's batch shrinks as
    dialogues finish and its first requests start before the rest are admitted.

Everything runs on 127.0.0.1 with a private local Ray started by the job itself (RAY_ADDRESS is
removed from the job's environment). Temp dirs are removed at the end unless --keep.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "platform"
if str(SOURCE) not in sys.path:
    sys.path.insert(0, str(SOURCE))

logger = logging.getLogger("bench.generation")

KEY_ENV = "UC_BENCH_FAKE_KEY"
SECTORS = ("I", "II", "III")
TOPICS = ("tides", "volcanoes", "bread baking", "the printing press", "photosynthesis", "jazz harmony",
          "compound interest", "glaciers", "chess openings", "honeybees", "solar panels", "the Roman roads",
          "sourdough", "black holes", "coral reefs", "vaccines", "typography", "bridges", "rainbows", "maps")

# The raw-vLLM side: its own process, because vLLM spawns processes (hence the __main__ guard) and
# logs to stdout (hence the result file).
RAW_VLLM_SCRIPT = r'''
import json
import random
import sys
import time


def main(spec_path, result_path):
    spec = json.loads(open(spec_path).read())
    from vllm import LLM, SamplingParams

    started = time.monotonic()
    from ultrachat.llm.vllm_cpu import cpu_engine_kwargs

    # The engine settings the pipeline's backend uses (on CPU: chunked prefill off, for seeds; eager).
    llm = LLM(model=spec["model"], dtype=spec["dtype"], max_model_len=spec["max_model_len"], seed=spec["seed"],
              **cpu_engine_kwargs({}, "raw"))
    startup_s = time.monotonic() - started
    tokenizer = llm.get_tokenizer()
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    vocab = [i for i in range(len(tokenizer)) if i not in special]
    rng = random.Random(spec["seed"])
    prompts, params = [], []
    for prompt_len, max_tokens in zip(spec["prompt_tokens"], spec["completion_tokens"]):
        prompts.append({"prompt_token_ids": [rng.choice(vocab) for _ in range(prompt_len)]})
        params.append(SamplingParams(max_tokens=max_tokens, ignore_eos=True, temperature=0))
    started = time.monotonic()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    seconds = time.monotonic() - started
    generated = sum(len(o.outputs[0].token_ids) for o in outputs)
    result = {"requests": len(outputs), "seconds": seconds, "engine_startup_s": startup_s,
              "prompt_tokens": sum(len(p["prompt_token_ids"]) for p in prompts),
              "completion_tokens": generated, "requested_completion_tokens": sum(spec["completion_tokens"]),
              "output_tokens_per_s": generated / seconds}
    with open(result_path, "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
'''


# ----------------------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def base_env() -> dict[str, str]:
    """The environment of every subprocess: local Ray on loopback, offline, no telemetry."""
    from ultrachat.local_env import local_env_defaults

    env = {**local_env_defaults(), **os.environ}  # what the user exported wins, as in the job
    env.pop("RAY_ADDRESS", None)
    env.update({"RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
                "PYTHONUNBUFFERED": "1"})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SOURCE), env.get("PYTHONPATH", "")) if p)
    return env


def kill_group(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Stop a child we started in its own session (and whatever it started there), by its id."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def write_openings(path: Path, count: int, tag: str) -> None:
    with path.open("w") as handle:
        for i in range(count):
            text = (f"[{tag} {i}] What are the most important things to know about {TOPICS[i % len(TOPICS)]}, "
                    f"and how would you explain them to a curious beginner (question {i})?")
            handle.write(json.dumps({"id": f"{tag}-{i:06d}", "sector": SECTORS[i % 3], "text": text}) + "\n")


def run_job(config: dict, work: Path, name: str, timeout_s: float, job: str = "generate") -> dict:
    """Run jobs/<job>.py on ``config`` as a subprocess; return its summary and wall time."""
    import yaml

    config_path = work / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    log_path = work / f"{name}.log"
    command = [sys.executable, str(REPO / "jobs" / f"{job}.py"), "--config", str(config_path),
               f"output_dir={config['output_dir']}"]
    logger.info("%s: running %s (log: %s)", name, " ".join(command[1:]), log_path)
    started = time.monotonic()
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=REPO, env=base_env(), stdout=subprocess.PIPE, stderr=log,
                                   text=True, start_new_session=True)
        try:
            stdout, _ = process.communicate(timeout=timeout_s)
        except BaseException:  # timeout, Ctrl-C: stop the job (and the local Ray it started)
            kill_group(process)
            raise
    wall_s = time.monotonic() - started
    (work / f"{name}.stdout").write_text(stdout)
    lines = [line for line in stdout.strip().splitlines() if line.startswith("{")]
    summary = json.loads(lines[-1]) if lines else None
    if process.returncode != 0 or not summary or summary.get("status") != "succeeded":
        raise RuntimeError(f"{name}: {job} job failed (exit {process.returncode}, summary {summary}); "
                           f"log tail:\n{tail(log_path)}")
    logger.info("%s: job finished in %.1f s: %s", name, wall_s, summary.get("counts"))
    return {"summary": summary, "wall_s": wall_s}


def read_records(out_dir: Path) -> list[dict]:
    import pyarrow.parquet as pq

    shards = sorted((out_dir / "dialogues").glob("*.parquet"))
    if not shards:
        raise RuntimeError(f"no dialogue shards under {out_dir / 'dialogues'}")
    columns = ["id", "status", "started_at", "seconds", "turns"]
    return [row for shard in shards for row in pq.read_table(shard, columns=columns).to_pylist()]


def window_stats(records: list[dict]) -> dict:
    """Generated turns and the generation window (first dialogue start -> last dialogue end)."""
    generated = [r for r in records if r["turns"]]  # invalid lines have no turns
    if not generated:
        raise RuntimeError("no record has generated turns")
    start = min(r["started_at"] for r in generated)
    end = max(r["started_at"] + r["seconds"] for r in generated)
    window = max(end - start, 1e-9)
    turns = [t for r in generated for t in r["turns"][1:]]  # turns[0] is the opening line
    statuses: dict[str, int] = {}
    for r in records:
        key = r["status"].split(":", 1)[0]
        statuses[key] = statuses.get(key, 0) + 1
    busy = sum(r["seconds"] for r in generated)
    return {
        "dialogues": len(records), "statuses": statuses, "requests": len(turns), "window_s": window,
        "prompt_tokens": [t["prompt_tokens"] for t in turns],
        "completion_tokens": [t["completion_tokens"] for t in turns],
        "mean_dialogue_s": busy / len(generated),
        "mean_dialogues_in_flight": busy / window,  # Little's law over the window
    }


# ------------------------------------------------------------------------------ (a) fake server


def start_fake_server(work: Path, latency: float, *extra_args: str) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    log_path = work / "fake_openai.log"
    log = log_path.open("w")
    process = subprocess.Popen([sys.executable, "-m", "ultrachat.devtools.fake_openai", "--port", str(port),
                                "--latency", str(latency), *extra_args], cwd=REPO, env=base_env(), stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"fake OpenAI server exited with {process.returncode}:\n{tail(log_path)}")
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            kill_group(process)
            raise RuntimeError(f"fake OpenAI server did not answer GET /v1/models within 60 s:\n{tail(log_path)}")
        time.sleep(0.2)
    logger.info("fake OpenAI server (pid %d) answers at %s with latency %.3f s", process.pid, base_url, latency)
    return process, base_url, log_path


def stop_fake_server(process: subprocess.Popen, log_path: Path) -> int | None:
    """SIGTERM (it logs its request count on the way out); return that count if logged."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            kill_group(process, grace_s=1.0)
    for line in reversed(tail(log_path, 2000).splitlines()):
        if "stopping after" in line:
            try:
                return int(line.split("stopping after", 1)[1].split()[0])
            except (IndexError, ValueError):
                return None
    return None


def part_a(args, work: Path) -> dict:
    c, latency, rounds = args.concurrency, args.latency, args.rounds
    actors, in_flight = args.actors, args.batches_in_flight
    if c % (actors * in_flight):
        raise SystemExit(f"--concurrency {c} must be a multiple of --actors x --batches-in-flight "
                         f"({actors} x {in_flight})")
    per_batch = c // (actors * in_flight)
    dialogues = args.dialogues or 20 * c
    openings = work / "openings_a.jsonl"
    write_openings(openings, dialogues, "a")
    server, base_url, server_log = start_fake_server(work, latency)
    try:
        # max_concurrency is per backend per actor: it must not cap the C dialogues in flight.
        chat = {"backend": "openai", "base_url": base_url, "model": "fake-model", "api_key_env": KEY_ENV,
                "max_concurrency": max(c // actors, 1), "timeout_s": max(30.0, 20 * latency), "max_retries": 2,
                "backoff_initial_s": 0.1, "backoff_max_s": 1.0}
        config = {
            "output_dir": str(work / "out_a"), "run_name": "bench-generation-a", "log_level": "INFO",
            "openings": {"path": str(openings)},
            "user": {"chat": chat, "sampling": {"temperature": 0.9, "max_tokens": 64, "seed": 0}},
            "assistant": {"chat": chat, "sampling": {"temperature": 0.7, "max_tokens": 128, "seed": 0}},
            "rounds": {s: {"min": rounds, "max": rounds} for s in SECTORS},
            "actors": {"min_actors": actors, "max_actors": actors, "num_cpus": args.actor_cpus,
                       "dialogues_per_batch": per_batch, "batches_in_flight": in_flight},
            "export_jsonl": False,
        }
        os.environ[KEY_ENV] = os.environ.get(KEY_ENV) or "bench-key"  # any value; inherited by the job
        job = run_job(config, work, "job_a", args.timeout)
    finally:
        served = stop_fake_server(server, server_log)
    stats = window_stats(read_records(work / "out_a"))
    expected = dialogues * (2 * rounds - 1)
    achieved = stats["requests"] / stats["window_s"]
    ideal = c / latency
    if stats["requests"] != expected:
        logger.warning("(a) %d generated turns, expected %d (statuses %s)", stats["requests"], expected,
                       stats["statuses"])
    result = {
        "concurrency": c, "latency_s": latency, "rounds": rounds, "dialogues": dialogues,
        "layout": f"{actors} actor(s) x {in_flight} batches in flight x {per_batch} dialogues per batch",
        "requests": stats["requests"], "expected_requests": expected, "server_requests": served,
        "statuses": stats["statuses"], "window_s": stats["window_s"], "job_wall_s": job["wall_s"],
        "achieved_rps": achieved, "ideal_rps": ideal, "ratio": achieved / ideal, "goal": 0.9,
        # Where a shortfall comes from: fewer dialogues in flight than C, or slower dialogues than 2R-1 x L.
        "mean_dialogues_in_flight": stats["mean_dialogues_in_flight"],
        "mean_dialogue_s": stats["mean_dialogue_s"], "ideal_dialogue_s": (2 * rounds - 1) * latency,
        "ideal_window_s": expected / ideal,
    }
    logger.info("(a) %d requests in %.2f s: %.1f req/s vs ideal %.1f: ratio %.3f", stats["requests"],
                stats["window_s"], achieved, ideal, result["ratio"])
    return result


# ------------------------------------------------------------------------------------ (b) vLLM


def part_b(args, work: Path) -> dict:
    from ultrachat.models.source import resolve_model

    n, rounds, per_batch = args.dialogues_vllm, args.rounds, args.vllm_dialogues_per_batch
    in_flight = math.ceil(n / per_batch)
    logger.info("(b) resolving %s (built offline on first use)", args.model)
    model_dir = resolve_model(args.model)
    openings = work / "openings_b.jsonl"
    write_openings(openings, n, "b")
    engine = {"backend": "vllm", "model": args.model, "dtype": "float32", "max_model_len": args.max_model_len}
    config = {
        "output_dir": str(work / "out_b"), "run_name": "bench-generation-b", "log_level": "INFO",
        "openings": {"path": str(openings)},
        # The sampling of configs/generate/local.yaml.
        "user": {"chat": engine, "sampling": {"temperature": 0.9, "top_p": 0.95, "max_tokens": 48, "seed": 0}},
        "assistant": {"chat": engine, "sampling": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 96, "seed": 0}},
        "rounds": {s: {"min": rounds, "max": rounds} for s in SECTORS},
        "actors": {"min_actors": 1, "max_actors": 1, "num_cpus": 1, "dialogues_per_batch": per_batch,
                   "batches_in_flight": in_flight},
        "export_jsonl": False,
    }
    job = run_job(config, work, "job_b", args.timeout)
    stats = window_stats(read_records(work / "out_b"))
    completion = sum(stats["completion_tokens"])
    if not completion:
        raise RuntimeError(f"(b) the pipeline generated no tokens (statuses {stats['statuses']})")
    pipeline_tps = completion / stats["window_s"]
    logger.info("(b) pipeline: %d turns, %d output tokens in %.2f s: %.1f tokens/s", stats["requests"],
                completion, stats["window_s"], pipeline_tps)

    spec = {"model": model_dir, "dtype": "float32", "max_model_len": args.max_model_len, "seed": 0,
            "prompt_tokens": stats["prompt_tokens"],
            # vLLM needs max_tokens >= 1; a 0-token turn (rare) is asked for 1.
            "completion_tokens": [max(1, t) for t in stats["completion_tokens"]]}
    spec_path, result_path, script_path = work / "raw_spec.json", work / "raw_result.json", work / "raw_vllm.py"
    spec_path.write_text(json.dumps(spec))
    script_path.write_text(RAW_VLLM_SCRIPT)
    log_path = work / "raw_vllm.log"
    logger.info("(b) raw vLLM: one generate call with %d requests (log: %s)", len(spec["prompt_tokens"]), log_path)
    started = time.monotonic()
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, str(script_path), str(spec_path), str(result_path)],
                                   cwd=work, env=base_env(), stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            process.wait(timeout=args.timeout)
        except BaseException:
            kill_group(process)
            raise
    raw_wall = time.monotonic() - started
    if process.returncode != 0 or not result_path.is_file():
        raise RuntimeError(f"raw vLLM run failed (exit {process.returncode}); log tail:\n{tail(log_path)}")
    raw = json.loads(result_path.read_text())
    logger.info("(b) raw vLLM: %d output tokens in %.2f s: %.1f tokens/s", raw["completion_tokens"],
                raw["seconds"], raw["output_tokens_per_s"])
    return {
        "model": args.model, "model_dir": model_dir, "dialogues": n, "rounds": rounds,
        "layout": f"1 actor x {in_flight} batches in flight x {per_batch} dialogues per batch",
        "statuses": stats["statuses"], "requests": stats["requests"],
        "prompt_tokens": sum(stats["prompt_tokens"]), "completion_tokens": completion,
        "window_s": stats["window_s"], "job_wall_s": job["wall_s"],
        "mean_dialogues_in_flight": stats["mean_dialogues_in_flight"],
        "pipeline_output_tps": pipeline_tps, "raw": raw, "raw_process_wall_s": raw_wall,
        "raw_output_tps": raw["output_tokens_per_s"], "ratio": pipeline_tps / raw["output_tokens_per_s"],
        "goal": 0.8,
    }


# ------------------------------------------------------------------------------------ reporting


def markdown(results: dict) -> str:
    def mark(ratio, goal):
        return "yes" if ratio >= goal else "**no**"

    rows = ["| benchmark | pipeline | reference | ratio | goal | met |", "| --- | --- | --- | --- | --- | --- |"]
    notes = []
    a, b = results.get("a"), results.get("b")
    if a:
        rows.append(f"| (a) fake server, C={a['concurrency']}, L={a['latency_s']:g} s: requests/s | "
                    f"{a['achieved_rps']:.1f} | {a['ideal_rps']:.1f} (C/L) | {a['ratio']:.3f} | >= {a['goal']} | "
                    f"{mark(a['ratio'], a['goal'])} |")
        notes.append(
            f"- (a) {a['layout']}; {a['dialogues']} dialogues x {2 * a['rounds'] - 1} requests = "
            f"{a['requests']} requests (server counted {a['server_requests']}), statuses {a['statuses']}. "
            f"Window {a['window_s']:.1f} s (ideal {a['ideal_window_s']:.1f} s), whole job {a['job_wall_s']:.1f} s. "
            f"Mean dialogues in flight {a['mean_dialogues_in_flight']:.1f} of {a['concurrency']}; "
            f"mean dialogue {a['mean_dialogue_s']:.2f} s (ideal {a['ideal_dialogue_s']:.2f} s).")
    if b:
        rows.append(f"| (b) vLLM CPU {b['model']}, N={b['dialogues']}: output tokens/s | "
                    f"{b['pipeline_output_tps']:.1f} | {b['raw_output_tps']:.1f} (raw `LLM.generate`) | "
                    f"{b['ratio']:.3f} | >= {b['goal']} | {mark(b['ratio'], b['goal'])} |")
        notes.append(
            f"- (b) {b['layout']}; {b['requests']} turns, {b['prompt_tokens']} prompt + {b['completion_tokens']} "
            f"output tokens, statuses {b['statuses']}. Pipeline window {b['window_s']:.1f} s (whole job "
            f"{b['job_wall_s']:.1f} s, mean dialogues in flight {b['mean_dialogues_in_flight']:.1f}); raw "
            f"generate {b['raw']['seconds']:.1f} s (engine startup {b['raw']['engine_startup_s']:.1f} s, not timed).")
        notes.append("- (b) is deliberately strict: raw vLLM gets all requests in one call, while a dialogue's "
                     "turns are sequential (each prompt needs the previous answer), so the pipeline's batch "
                     "ramps up and drains; raw decoding is greedy, the pipeline samples as configs/generate/local.yaml.")
    return "\n".join(rows + [""] + notes)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("a", "b", "both"), default="both")
    parser.add_argument("--latency", type=float, default=0.5, help="(a) fake server latency L in seconds")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="(a) C = actors x batches in flight x dialogues per batch (default 64)")
    parser.add_argument("--dialogues", type=int, default=None, help="(a) dialogues (default 20 x C)")
    parser.add_argument("--actors", type=int, default=1, help="(a) generation actors")
    parser.add_argument("--actor-cpus", type=float, default=1, help="(a) num_cpus per actor")
    parser.add_argument("--batches-in-flight", type=int, default=None, help="(a) per actor (default 8)")
    parser.add_argument("--dialogues-vllm", type=int, default=None, help="(b) N dialogues (default 48)")
    parser.add_argument("--vllm-dialogues-per-batch", type=int, default=8,
                        help="(b) batches in flight = ceil(N / this), so every dialogue is in flight")
    parser.add_argument("--rounds", type=int, default=3, help="fixed rounds per dialogue (2R-1 requests)")
    parser.add_argument("--model", default="tiny:small",
                        help="(b) model reference, e.g. local:smollm2-135m-instruct (real words, 135M)")
    parser.add_argument("--max-model-len", type=int, default=1024, help="(b) engine max_model_len")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per job/subprocess")
    parser.add_argument("--out", default="generation_results.json", help="JSON result file")
    parser.add_argument("--quick", action="store_true", help="smoke run: C=8, 2 x C dialogues, N=8")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs, outputs)")
    args = parser.parse_args(argv)
    quick = {"concurrency": 8, "batches_in_flight": 2, "dialogues_vllm": 8}
    full = {"concurrency": 64, "batches_in_flight": 8, "dialogues_vllm": 48}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick and args.dialogues is None:
        args.dialogues = 2 * args.concurrency
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if (Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster").exists():
        logger.warning("/tmp/ray/ray_current_cluster exists (a `ray start` cluster): the job's ray.init() "
                       "may join that cluster instead of starting a private one")
    work = Path(tempfile.mkdtemp(prefix="bench-generation-"))
    logger.info("work dir %s", work)
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
                     "args": vars(args), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        if args.part in ("a", "both"):
            results["a"] = part_a(args, work)
        if args.part in ("b", "both"):
            results["b"] = part_b(args, work)
    finally:
        if args.keep:
            logger.info("kept %s", work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    Path(args.out).write_text(json.dumps(results, indent=2, default=str) + "\n")
    logger.info("results written to %s", args.out)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
