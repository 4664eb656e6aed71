"""Generation benchmark: the real generate job, measured side by side with its ideal.

Run from the repo root (the full run is heavy: run it on an idle machine)::

    .venv/bin/python bench/generation.py                      # both parts, default sizes
    .venv/bin/python bench/generation.py --quick              # smoke run: tiny sizes, ~2-4 min
    .venv/bin/python bench/generation.py --part a --latency 0.5 --concurrency 64 --dialogues 1280
    .venv/bin/python bench/generation.py --part b --dialogues-vllm 48,96,192 --out b.json --keep
    .venv/bin/python bench/generation.py --part b --dialogues-vllm 48,96,192 --cpu-layout isolated --repeats 2

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

(b) Pipeline vs raw vLLM in steady state, the vLLM CPU engine with the ``tiny:small`` model (built
    offline on first use into $ULTRACHAT_CACHE or ~/.cache/ultrachat). For each N of
    ``--dialogues-vllm`` (e.g. 48,96,192) the generate job runs factor x N dialogues (default 4 x N)
    on one actor with N in flight (N / 8 batches of 8), with ``ULTRACHAT_VLLM_TRACE`` set: the backend
    records every request (prompt token ids, sampling, seed, times). Right after it, a fresh process
    starts a raw ``AsyncLLM`` with the backend's engine settings and replays the pipeline's requests:
    N workers each take the next dialogue (in the pipeline's start order) and send its turns one after
    another, with the pipeline's prompt token ids, temperature, top_p and seed, max_tokens = the
    turn's output length and ignore_eos, so both sides make the same tokens from the same prompts,
    with the same prefix structure (a turn's prompt extends the dialogue's earlier ones: prefix
    caching helps both alike) and the same number of requests in flight. The prefix cache is reset
    between N.
    Steady state, the same rule on both sides: from the moment N dialogues are first in flight to
    the start of the last dialogue (after it the input is used up and in-flight dialogues run out:
    the tail, reported separately, as are the ramp-up and the whole run). Output tokens in the window
    count each request's tokens spread evenly over its time in the engine. Ratio = pipeline steady
    output tokens/s / raw steady output tokens/s. Goal >= 0.9. The notes say where the pipeline's
    time goes: dialogues and requests actually in flight, time per request in the engine, rendering,
    the gap between a dialogue's turns, prefix-cache hits, and (bench/cpu_share.py, sampled from
    /proc) how many cores each process group had during each side's steady window.
    CPU layouts (``--cpu-layout``, default both, each measured side by side with its own raw run):
    ``shared`` puts vLLM's OpenMP threads on every core, beside the driver, the actor and Ray's own
    processes, which on 2 cores preempt the model's compute; ``isolated`` gives vLLM's OpenMP threads
    the last core alone and runs everything else (driver, Ray, the actor, vLLM's engine-core process,
    the raw client) on the others, as on a GPU node, where the compute has hardware of its own.
    ``--repeats K`` runs each N's pipeline and raw replay K times in turn; the table adds each N's
    mean ratio (one pair's ratio moves by several percent from run to run on a small machine).

Everything runs on 127.0.0.1 with a private local Ray started by the job itself (RAY_ADDRESS is
removed from the job's environment). Temp dirs are removed at the end unless --keep.
"""

from __future__ import annotations

import argparse
import json
import logging
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

from cpu_share import CpuShare  # noqa: E402  (bench/ is on sys.path as the script's folder)

logger = logging.getLogger("bench.generation")

KEY_ENV = "UC_BENCH_FAKE_KEY"
TRACE_ENV = "ULTRACHAT_VLLM_TRACE"  # llm/vllm_backend.py: one JSON line per request
SEED = 0  # (b) both roles' sampling seed: every turn's derived seed names its dialogue and turn
SECTORS = ("I", "II", "III")
TOPICS = ("tides", "volcanoes", "bread baking", "the printing press", "photosynthesis", "jazz harmony",
          "compound interest", "glaciers", "chess openings", "honeybees", "solar panels", "the Roman roads",
          "sourdough", "black holes", "coral reefs", "vaccines", "typography", "bridges", "rainbows", "maps")

# The raw-vLLM side: its own process, because vLLM spawns processes (hence the __main__ guard) and
# logs to stdout (hence the result file).
RAW_VLLM_SCRIPT = r'''
import asyncio
import json
import sys
import time


async def replay(engine, run):
    """Each of run["in_flight"] workers takes the next dialogue (in the pipeline's start order) and
    sends its turns one after another, as a dialogue does: one request per dialogue at a time."""
    from vllm import SamplingParams
    from vllm.inputs.engine import tokens_input
    from vllm.sampling_params import RequestOutputKind

    queue = list(reversed(run["dialogues"]))
    requests, spans = [], []

    async def worker():
        while queue:
            turns = queue.pop()
            started = time.time()
            for turn in turns:
                params = SamplingParams(temperature=turn["temperature"], top_p=turn["top_p"], seed=turn["seed"],
                                        max_tokens=max(1, turn["completion_tokens"]), ignore_eos=True,
                                        output_kind=RequestOutputKind.FINAL_ONLY)
                submitted = time.time()
                final = None
                async for output in engine.generate(tokens_input(turn["prompt_token_ids"]), params,
                                                    request_id=f"r{len(requests)}-{submitted}"):
                    final = output
                requests.append({"submitted": submitted, "done": time.time(),
                                 "completion_tokens": len(final.outputs[0].token_ids),
                                 "cached_tokens": final.num_cached_tokens,
                                 "prompt_tokens": len(turn["prompt_token_ids"])})
            spans.append([started, time.time()])

    await engine.reset_prefix_cache()  # each run starts as the pipeline's fresh engine does
    await asyncio.gather(*(worker() for _ in range(run["in_flight"])))
    return {"in_flight": run["in_flight"], "requests": requests, "dialogue_spans": spans}


async def main(spec_path, result_path):
    spec = json.loads(open(spec_path).read())
    from vllm import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    from ultrachat.config.chat import VllmBackend
    from ultrachat.llm.vllm_backend import engine_kwargs

    started = time.monotonic()
    # The engine settings of the pipeline's backend (prefix caching; on CPU eager, no chunked prefill).
    config = VllmBackend(backend="vllm", model=spec["model_ref"], dtype=spec["dtype"],
                         max_model_len=spec["max_model_len"])
    engine = AsyncLLM.from_engine_args(AsyncEngineArgs(model=spec["model"], dtype=spec["dtype"],
                                                       max_model_len=spec["max_model_len"], **engine_kwargs(config)))
    startup_s = time.monotonic() - started
    results = []
    try:
        for run in spec["runs"]:
            results.append(await replay(engine, run))
    finally:
        engine.shutdown()
    with open(result_path, "w") as handle:
        json.dump({"engine_startup_s": startup_s, "runs": results}, handle)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
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


def cpu_layout(name: str) -> tuple[dict[str, str], set[int] | None]:
    """(environment, CPU affinity) of the job and of the raw replay under a (b) ``--cpu-layout``.

    shared: vLLM's OpenMP threads on every core, beside the driver, the actor and Ray's own processes
    (the local default). isolated: the OpenMP threads alone on the last core, everything else (the
    driver, Ray's daemons, the actor's Python, vLLM's engine-core process, the raw replay's client) on
    the others: a GPU node's split, where the model's compute has hardware of its own and the CPU
    work runs beside it, not on it. Both sides of a ratio run in the same layout."""
    if name == "shared":
        return {}, None
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("--cpu-layout isolated needs at least 2 cores")
    return {"VLLM_CPU_OMP_THREADS_BIND": str(cores[-1])}, set(cores[:-1])


def popen_layout(layout: str) -> dict:
    """Popen keyword arguments (env, preexec_fn) that run a child, and all it starts, in ``layout``."""
    env, affinity = cpu_layout(layout)
    kwargs = {"env": {**base_env(), **env}}
    if affinity:
        kwargs["preexec_fn"] = lambda: os.sched_setaffinity(0, affinity)
    return kwargs


def run_job(config: dict, work: Path, name: str, timeout_s: float, job: str = "generate",
            layout: str = "shared") -> dict:
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
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True,
                                   start_new_session=True, **popen_layout(layout))
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


def prorated_tokens(requests: list[dict], start: float, end: float) -> float:
    """Output tokens made in [start, end]: each request's tokens spread evenly over its time in the
    engine (first token to last is not recorded, so both sides are counted the same way)."""
    total = 0.0
    for r in requests:
        s, e = r["engine_start"], r["done"]
        overlap = min(e, end) - max(s, start)
        if overlap > 0:
            total += r["completion_tokens"] * (overlap / (e - s) if e > s else 1.0)
    return total


def mean_overlap(intervals: list[tuple[float, float]], start: float, end: float) -> float:
    """Mean number of the intervals open during [start, end] (Little's law over a window)."""
    busy = sum(max(0.0, min(e, end) - max(s, start)) for s, e in intervals)
    return busy / max(end - start, 1e-9)


def steady_window(dialogues: list[tuple[float, float]], in_flight: int) -> tuple[float, float, bool]:
    """From the moment ``in_flight`` dialogues are first running at once to the last dialogue's start
    (after it, nothing is left to start: the tail). Returns (start, end, reached); not reached, the
    window starts where the most dialogues ran at once."""
    events = sorted([(s, 1) for s, _ in dialogues] + [(e, -1) for _, e in dialogues], key=lambda x: (x[0], -x[1]))
    count, best, best_at, start = 0, -1, events[0][0], None
    for t, step in events:
        count += step
        if count > best:
            best, best_at = count, t
        if start is None and count >= in_flight:
            start = t
    end = max(s for s, _ in dialogues)
    return (start if start is not None else best_at), end, start is not None


def side_stats(requests: list[dict], dialogues: list[tuple[float, float]], in_flight: int) -> dict:
    """Steady-state and tail throughput of one side (pipeline or raw), same rules for both."""
    start, end, reached = steady_window(dialogues, in_flight)
    last = max(r["done"] for r in requests)
    first = min(s for s, _ in dialogues)
    steady = prorated_tokens(requests, start, end)
    tail = prorated_tokens(requests, end, last)
    engine = [(r["engine_start"], r["done"]) for r in requests]
    return {
        "steady_start": start, "steady_end": end,
        "steady_window_s": end - start, "in_flight_reached": reached,
        "steady_output_tokens": steady, "steady_output_tps": steady / max(end - start, 1e-9),
        "steady_dialogues_in_flight": mean_overlap(dialogues, start, end),
        "steady_requests_in_engine": mean_overlap(engine, start, end),
        "tail_s": last - end, "tail_output_tps": tail / max(last - end, 1e-9),
        "ramp_up_s": start - first, "whole_s": last - first,
        "whole_output_tps": sum(r["completion_tokens"] for r in requests) / max(last - first, 1e-9),
        "mean_engine_s": sum(e - s for s, e in engine) / len(engine),
        "cached_fraction": (sum(r["cached_tokens"] or 0 for r in requests)
                            / max(1, sum(r["prompt_tokens"] for r in requests))),
    }


def read_trace(path: Path, records: list[dict], seed: int) -> list[list[dict]]:
    """The backend's per-request trace (ULTRACHAT_VLLM_TRACE), grouped into dialogues in the order
    they started, each dialogue's turns in order. A turn's seed names its dialogue and turn
    (generation/dialogue.py derives it from the dialogue id and turn index)."""
    from ultrachat.ids import derived_seed

    if not path.is_file():
        raise RuntimeError(f"no request trace at {path}: the actor did not inherit {TRACE_ENV}")
    owner = {}
    for r in records:
        for turn in range(len(r["turns"]) - 1):
            owner[derived_seed(seed, r["id"], turn)] = (r["id"], turn)
    by_dialogue: dict[str, dict[int, dict]] = {}
    with path.open() as handle:
        for line in handle:
            request = json.loads(line)
            if request["seed"] not in owner:
                raise RuntimeError(f"trace request with seed {request['seed']} matches no dialogue turn")
            dialogue, turn = owner[request["seed"]]
            by_dialogue.setdefault(dialogue, {})[turn] = request
    order = sorted((r["started_at"], r["id"]) for r in records if r["id"] in by_dialogue)
    return [[by_dialogue[i][t] for t in sorted(by_dialogue[i])] for _, i in order]


def pipeline_job(args, work: Path, n: int, layout: str, repeat: int) -> dict:
    """Run the generate job with ``n`` dialogues in flight on one actor; return its trace and stats."""
    tag = f"{layout}_b{n}_r{repeat}"
    per_batch = min(args.vllm_dialogues_per_batch, n)
    if n % per_batch:
        raise SystemExit(f"--dialogues-vllm {n} must be a multiple of --vllm-dialogues-per-batch {per_batch}")
    in_flight = n // per_batch
    total = args.vllm_dialogue_factor * n
    openings = work / f"openings_{tag}.jsonl"
    write_openings(openings, total, tag)
    engine = {"backend": "vllm", "model": args.model, "dtype": "float32", "max_model_len": args.max_model_len}
    config = {
        "output_dir": str(work / f"out_{tag}"), "run_name": f"bench-generation-{tag}", "log_level": "INFO",
        "openings": {"path": str(openings)},
        # The sampling of configs/generate/local.yaml.
        "user": {"chat": engine, "sampling": {"temperature": 0.9, "top_p": 0.95, "max_tokens": 48, "seed": SEED}},
        "assistant": {"chat": engine, "sampling": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 96, "seed": SEED}},
        "rounds": {s: {"min": args.rounds, "max": args.rounds} for s in SECTORS},
        "actors": {"min_actors": 1, "max_actors": 1, "num_cpus": 1, "dialogues_per_batch": per_batch,
                   "batches_in_flight": in_flight},
        "export_jsonl": False,
    }
    trace_path = work / f"trace_{tag}.jsonl"
    os.environ[TRACE_ENV] = str(trace_path)  # inherited by the job, its local Ray and the actor
    try:
        job = run_job(config, work, f"job_{tag}", args.timeout, layout=layout)
    finally:
        os.environ.pop(TRACE_ENV, None)
    out = work / f"out_{tag}"
    records = read_records(out)
    dialogues = read_trace(trace_path, records, SEED)
    stats = window_stats(records)
    requests = [{**t, "engine_start": t["rendered"], "prompt_tokens": len(t["prompt_token_ids"])}
                for d in dialogues for t in d]
    spans = [(r["started_at"], r["started_at"] + r["seconds"]) for r in records if r["turns"]]
    side = side_stats(requests, spans, n)
    # Where a turn's time goes outside the engine: rendering (template + tokenizing, on vLLM's
    # renderer thread) and the gap between a turn's answer and the next turn's request.
    render = [t["rendered"] - t["submitted"] for t in requests]
    gaps = [b["submitted"] - a["done"] for d in dialogues for a, b in zip(d, d[1:])]
    side.update({
        "mean_render_ms": 1000 * sum(render) / len(render),
        "mean_gap_between_turns_ms": 1000 * sum(gaps) / max(1, len(gaps)),
    })
    logger.info("(b) %s N=%d pipeline: steady %.1f output tokens/s over %.1f s (%.1f dialogues in flight), tail %.1f s",
                layout, n, side["steady_output_tps"], side["steady_window_s"], side["steady_dialogues_in_flight"],
                side["tail_s"])
    return {
        "dialogues_in_flight": n, "repeat": repeat, "dialogues": total, "statuses": stats["statuses"],
        "layout": f"1 actor x {in_flight} batches in flight x {per_batch} dialogues per batch",
        "requests": len(requests), "prompt_tokens": sum(len(t["prompt_token_ids"]) for t in requests),
        "completion_tokens": sum(t["completion_tokens"] for t in requests), "job_wall_s": job["wall_s"],
        "pipeline": side,
        "replay": {"in_flight": n, "dialogues": [
            [{k: t[k] for k in ("prompt_token_ids", "completion_tokens", "seed", "temperature", "top_p")} for t in d]
            for d in dialogues]},
    }


def raw_vllm(args, work: Path, model_dir: str, runs: list[dict], tag: str) -> dict:
    """Replay the runs' turns on raw AsyncLLM in one fresh process, in the CPU layout ``tag`` starts with."""
    layout = tag.split("_")[0]
    spec = {"model": model_dir, "model_ref": args.model, "dtype": "float32", "max_model_len": args.max_model_len,
            "runs": runs}
    spec_path, result_path = work / f"raw_spec_{tag}.json", work / f"raw_result_{tag}.json"
    script_path = work / "raw_vllm.py"
    spec_path.write_text(json.dumps(spec))
    script_path.write_text(RAW_VLLM_SCRIPT)
    log_path = work / f"raw_vllm_{tag}.log"
    logger.info("(b) %s raw vLLM: replaying %s (log: %s)", layout, ", ".join(f"N={r['in_flight']}" for r in runs),
                log_path)
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, str(script_path), str(spec_path), str(result_path)],
                                   cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   **popen_layout(layout))
        try:
            process.wait(timeout=args.timeout)
        except BaseException:
            kill_group(process)
            raise
    if process.returncode != 0 or not result_path.is_file():
        raise RuntimeError(f"raw vLLM run failed (exit {process.returncode}); log tail:\n{tail(log_path)}")
    return json.loads(result_path.read_text())


def part_b_layout(args, work: Path, model_dir: str, layout: str) -> dict:
    """Every N in one CPU layout: the pipeline runs, then one raw engine replays them all."""
    # Each N's raw replay runs right after its pipeline run (its own engine start, outside the windows):
    # the machine's speed drifts by several percent over the tens of minutes a whole layout takes, so
    # the two sides of a ratio are measured minutes apart, not half an hour.
    # With --repeats K the two sides alternate K times per N (pipeline, raw, pipeline, raw, ...): one
    # pair's ratio moves by about +-10% here, so a size's verdict rests on the mean of K ratios.
    runs, replays, startups = [], [], []
    with CpuShare() as cpu:
        for n in args.dialogues_vllm:
            for repeat in range(args.repeats):
                runs.append(pipeline_job(args, work, n, layout, repeat))
                raw = raw_vllm(args, work, model_dir, [runs[-1].pop("replay")], f"{layout}_b{n}_r{repeat}")
                replays += raw["runs"]
                startups.append(raw["engine_startup_s"])
    for run, replayed in zip(runs, replays):
        n = run["dialogues_in_flight"]
        requests = [{**r, "engine_start": r["submitted"]} for r in replayed["requests"]]
        # A raw dialogue lasts from its worker taking it to its last turn's answer.
        run["raw"] = side_stats(requests, [tuple(s) for s in replayed["dialogue_spans"]], n)
        run["ratio"] = run["pipeline"]["steady_output_tps"] / run["raw"]["steady_output_tps"]
        run["whole_run_ratio"] = run["pipeline"]["whole_output_tps"] / run["raw"]["whole_output_tps"]
        # Who had the cores during each side's steady window.
        for side in ("pipeline", "raw"):
            run[side]["cpu"] = cpu.share(run[side]["steady_start"], run[side]["steady_end"])
        logger.info("(b) %s N=%d raw: steady %.1f output tokens/s; ratio %.3f (whole run %.3f)", layout, n,
                    run["raw"]["steady_output_tps"], run["ratio"], run["whole_run_ratio"])
    return {"layout": layout, "raw_engine_startup_s": startups, "runs": runs, "per_size": per_size(runs)}


def per_size(runs: list[dict]) -> list[dict]:
    """Each N's ratios over its alternating repeats: mean, lowest and highest."""
    sizes = list(dict.fromkeys(run["dialogues_in_flight"] for run in runs))
    summary = []
    for n in sizes:
        ratios = [run["ratio"] for run in runs if run["dialogues_in_flight"] == n]
        summary.append({"dialogues_in_flight": n, "ratios": ratios, "mean_ratio": sum(ratios) / len(ratios),
                        "min_ratio": min(ratios), "max_ratio": max(ratios)})
    return summary


def part_b(args, work: Path) -> dict:
    from ultrachat.models.source import resolve_model

    logger.info("(b) resolving %s (built offline on first use)", args.model)
    model_dir = resolve_model(args.model)
    layouts = [part_b_layout(args, work, model_dir, layout) for layout in args.cpu_layout]
    return {"model": args.model, "model_dir": model_dir, "rounds": args.rounds, "layouts": layouts, "goal": 0.9}


# ------------------------------------------------------------------------------------ reporting


def cpu_note(pipeline: dict | None, raw: dict | None) -> str:
    """Cores (and times scheduled per second) of each process group during the two steady windows."""
    if not pipeline or not raw:
        return "  - CPU by process group: not sampled (no /proc schedstat here)"
    groups = list(dict.fromkeys([*pipeline, *raw]))
    cells = []
    for group in groups:
        p, r = pipeline.get(group, {}), raw.get(group, {})
        if max(p.get("cores", 0), r.get("cores", 0)) < 0.005:
            continue
        cells.append(f"{group} {p.get('cores', 0):.2f} / {r.get('cores', 0):.2f} cores "
                     f"({p.get('scheduled_per_s', 0):.0f} / {r.get('scheduled_per_s', 0):.0f} runs/s)")
    return "  - CPU by process group, pipeline / raw steady window: " + "; ".join(cells)


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
    for part in (b or {}).get("layouts", []):
        layout = part["layout"]
        for run in part["runs"]:
            p, r, n = run["pipeline"], run["raw"], run["dialogues_in_flight"]
            rows.append(f"| (b) vLLM CPU {b['model']}, {layout} cores, N={n} in flight: steady output tokens/s | "
                        f"{p['steady_output_tps']:.1f} | {r['steady_output_tps']:.1f} (raw AsyncLLM, N in flight) | "
                        f"{run['ratio']:.3f} | >= {b['goal']} | {mark(run['ratio'], b['goal'])} |")
            notes.append(
                f"- (b) {layout} N={n}: {run['layout']}; {run['dialogues']} dialogues, {run['requests']} turns, "
                f"{run['prompt_tokens']} prompt + {run['completion_tokens']} output tokens, statuses "
                f"{run['statuses']}. Steady window {p['steady_window_s']:.1f} s pipeline / {r['steady_window_s']:.1f} s "
                f"raw (dialogues in flight {p['steady_dialogues_in_flight']:.1f} / "
                f"{r['steady_dialogues_in_flight']:.1f}, requests in the engine {p['steady_requests_in_engine']:.1f} / "
                f"{r['steady_requests_in_engine']:.1f}). Tail {p['tail_s']:.1f} s at {p['tail_output_tps']:.1f} "
                f"tokens/s / {r['tail_s']:.1f} s at {r['tail_output_tps']:.1f}; whole run {p['whole_output_tps']:.1f} / "
                f"{r['whole_output_tps']:.1f} tokens/s (ratio {run['whole_run_ratio']:.3f}). Mean request in the "
                f"engine {1000 * p['mean_engine_s']:.0f} / {1000 * r['mean_engine_s']:.0f} ms; pipeline render "
                f"{p['mean_render_ms']:.1f} ms and gap between a dialogue's turns "
                f"{p['mean_gap_between_turns_ms']:.1f} ms per turn; prefix-cache hits "
                f"{100 * p['cached_fraction']:.0f}% / {100 * r['cached_fraction']:.0f}% of prompt tokens.")
            notes.append(cpu_note(p.get("cpu"), r.get("cpu")))
        for size in part["per_size"]:
            if len(size["ratios"]) > 1:
                rows.append(f"| (b) {layout} cores, N={size['dialogues_in_flight']}: mean of "
                            f"{len(size['ratios'])} alternating pairs (lowest-highest "
                            f"{size['min_ratio']:.3f}-{size['max_ratio']:.3f}) | | | {size['mean_ratio']:.3f} | "
                            f">= {b['goal']} | {mark(size['mean_ratio'], b['goal'])} |")
    if b:
        notes.append("- (b) raw vLLM replays the pipeline's own requests (its prompt token ids, sampling and seeds; "
                     "max_tokens = the turn's output length, ignore_eos) with N dialogues in flight, each "
                     "dialogue's turns one after another, on the same engine settings. Steady window: from N "
                     "dialogues first in flight to the last dialogue's start; the tail after it is reported apart. "
                     "Layouts: shared = vLLM's OpenMP threads on every core, beside everything else; isolated = "
                     "vLLM's OpenMP threads alone on the last core, everything else on the others (a GPU node's "
                     "split); both sides of a ratio run in the same layout.")
    return "\n".join(rows + [""] + notes)


def _sizes(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive integers separated by commas, e.g. 48,96,192")
    return sizes


def _layouts(text: str) -> list[str]:
    layouts = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(layouts) - {"shared", "isolated"})
    if not layouts or unknown:
        raise argparse.ArgumentTypeError(f"{text!r}: expected shared, isolated or shared,isolated")
    return layouts


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
    parser.add_argument("--dialogues-vllm", type=_sizes, default=None,
                        help="(b) N dialogues in flight, or several: 48,96,192 (default 48)")
    parser.add_argument("--vllm-dialogue-factor", type=int, default=4,
                        help="(b) dialogues per run = this x N, so that N stay in flight for most of the run")
    parser.add_argument("--vllm-dialogues-per-batch", type=int, default=8,
                        help="(b) batches in flight = N / this")
    parser.add_argument("--cpu-layout", type=_layouts, default=["shared", "isolated"],
                        help="(b) shared (vLLM's threads on every core, beside everything else), isolated (vLLM's "
                             "threads alone on the last core, the rest on the others), or both: shared,isolated")
    parser.add_argument("--repeats", type=int, default=1,
                        help="(b) pipeline/raw pairs per N, alternating; the table adds each N's mean ratio")
    parser.add_argument("--rounds", type=int, default=3, help="fixed rounds per dialogue (2R-1 requests)")
    parser.add_argument("--model", default="tiny:small",
                        help="(b) model reference, e.g. local:smollm2-135m-instruct (real words, 135M)")
    parser.add_argument("--max-model-len", type=int, default=1024, help="(b) engine max_model_len")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per job/subprocess")
    parser.add_argument("--out", default="generation_results.json", help="JSON result file")
    parser.add_argument("--quick", action="store_true", help="smoke run: C=8, 2 x C dialogues, N=8")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs, outputs)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: give 1 or more pipeline/raw pairs per N")
    quick = {"concurrency": 8, "batches_in_flight": 2, "dialogues_vllm": [8]}
    full = {"concurrency": 64, "batches_in_flight": 8, "dialogues_vllm": [48]}
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
