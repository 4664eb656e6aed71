"""Serving benchmark: our Serve app vs ray.serve.llm vs a bare vLLM OpenAI server.

Run from the repo root on an idle machine::

    .venv/bin/python bench/serving.py                      # 3 alternating rounds, all candidates
    .venv/bin/python bench/serving.py --rounds 1 --candidates ours,bare --out bench-serving.json

It prints a Markdown table (stdout; logs on stderr) and writes every number to ``--out`` (JSON).

Each candidate serves the same ``tiny:small`` LLaMA (f32, vLLM CPU, max_model_len 1024, the model's
own chat template) on 127.0.0.1, started fresh in its own process group per round; rounds alternate
the order (A B C, then B C A, ...). Candidates:

- ``ours``: ``ultrachat.serving`` as configs/serve/local.yaml runs it: one replica running the
  engine and vLLM's OpenAI app, serving HTTP itself (``ingress: direct``, Ray Serve direct ingress),
  a local Ray with workers at nice 0 (``ray.local_worker_niceness: 0``).
- ``ours-proxy``: the same deployment behind Serve's HTTP proxy (``ingress: proxy``): one Ray hop
  per stream chunk.
- ``ray-llm``: ``ray.serve.llm`` defaults (``LLMConfig`` + ``build_openai_app``) with only what
  CPU needs (CPU accelerator config and bundle, ingress ``num_cpus: 0``).
- ``ray-llm-tuned``: the same with no stream batching (``stream_batching_interval_ms: 0``) and
  workers at nice 0. (Its direct-streaming mode, ``RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING=1``, which
  makes LLMServer the ingress, refuses to start without HAProxy, ``RAY_SERVE_ENABLE_HA_PROXY=1``;
  there is no haproxy binary here.)
- ``bare``: ``python -m vllm.entrypoints.openai.api_server``, same model and engine settings.

Load per concurrency level C (1, 8, 32), after one unmeasured pass of the same load: C streams, each
sending ``--requests`` chat completions in a row (fixed prompt, ``max_tokens`` with ``ignore_eos``,
temperature 0, ``stream: true`` with ``include_usage``). Output tokens/s = completion tokens / wall time of the level; TTFT = time to the
first content chunk. Time to first success: process start -> first 200 chat reply. Memory of the
server's process tree: peak summed RSS (sampled every 0.5 s) and summed PSS (shared pages split
fairly), the latter measured after the warm-up and after the load, never during it: reading smaps
takes the target's memory-map lock and stalls it. The load generator is this process (aiohttp), the
same for every candidate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))
logger = logging.getLogger("bench.serving")

MODEL_NAME = "bench-tiny"
ENGINE = {"dtype": "float32", "max_model_len": 1024}
# The served model; --model sets it for the server children too (they inherit the environment).
MODEL_ENV = "BENCH_SERVING_MODEL"
PROMPT = ("Explain, step by step and with examples, how a small town can plan a weekly farmers market "
          "that supports local growers, keeps prices fair and brings neighbours together.")
ENGINE_CORES = "0"
CANDIDATES = ("ours", "ours-proxy", "ray-llm", "ray-llm-tuned", "bare")


# ------------------------------------------------------------------------ servers (child process)


def serve_forever(candidate: str, port: int, direct_port: int) -> None:
    """Child process: start ``candidate`` on 127.0.0.1:port and block until SIGINT/SIGTERM.

    ``ours`` answers on ``direct_port`` (direct ingress), every other candidate on ``port``.
    """
    from ultrachat.local_env import apply_local_env_defaults
    from ultrachat.models.source import resolve_model

    # The engine gets core 0 and everything else (HTTP layers, Ray, the load generator) the other
    # cores, as on a GPU node where the engine does not compete with the frontend for CPU. With the
    # engine's OpenMP threads spinning on every core, any other process preempting one of them stalls
    # the whole step, and the numbers swing 2-4x from run to run.
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", ENGINE_CORES)
    apply_local_env_defaults()
    model_dir = resolve_model(os.environ.get(MODEL_ENV, "tiny:small"))
    if candidate == "bare":
        os.execv(sys.executable, [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
                                  "--served-model-name", MODEL_NAME, "--dtype", ENGINE["dtype"], "--max-model-len",
                                  str(ENGINE["max_model_len"]), "--host", "127.0.0.1", "--port", str(port),
                                  "--disable-uvicorn-access-log"])
    if candidate in ("ours", "ours-proxy", "ray-llm-tuned"):
        os.environ["RAY_worker_niceness"] = "0"
    stage = _our_stage(model_dir, port, direct_port, "direct" if candidate == "ours" else "proxy")
    if candidate == "ours":
        os.environ.update(stage.local_ray_env())
    import ray
    from ray import serve

    ray.init(address="local", _node_ip_address="127.0.0.1", num_cpus=2, include_dashboard=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(_app(candidate, model_dir, stage), name="bench", route_prefix="/", blocking=False)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()


def _our_stage(model_dir: str, port: int, direct_port: int, ingress: str):
    from ultrachat.config.serving import ServeStage

    model = {"name": MODEL_NAME, "source": model_dir, "accelerator": "cpu", "num_cpus_per_replica": 1,
             "max_ongoing_requests": 256, **ENGINE}
    return ServeStage(models=[model], port=port, direct_port=direct_port, ingress=ingress)


def _app(candidate: str, model_dir: str, stage):
    if candidate.startswith("ours"):
        from ultrachat.serving.app import build_application

        return build_application(stage)
    from ray.serve.llm import LLMConfig, build_openai_app

    experimental = {"stream_batching_interval_ms": 0} if candidate == "ray-llm-tuned" else {}
    config = LLMConfig(model_loading_config={"model_id": MODEL_NAME, "model_source": model_dir},
                       accelerator_config={"kind": "cpu"}, placement_group_config={"bundles": [{"CPU": 1}]},
                       engine_kwargs=dict(ENGINE), experimental_configs=experimental)
    return build_openai_app({"llm_configs": [config],
                             "ingress_deployment_config": {"ray_actor_options": {"num_cpus": 0}}})


# ----------------------------------------------------------------------------- load (this process)


async def _one_request(session, url: str, max_tokens: int) -> tuple[float, int, float]:
    """(ttft s, completion tokens, total s) of one streamed chat completion."""
    body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens,
            "temperature": 0, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    ttft, tokens = None, 0
    async with session.post(f"{url}/v1/chat/completions", json=body) as response:
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {(await response.text())[:200]}")
        async for raw in response.content:
            line = raw.strip()
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if ttft is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                ttft = time.perf_counter() - started
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return ttft if ttft is not None else float("nan"), tokens, time.perf_counter() - started


async def run_level(url: str, concurrency: int, requests: int, max_tokens: int) -> dict:
    import aiohttp

    results: list[tuple[float, int, float]] = []
    retried: list[int] = []
    timeout = aiohttp.ClientTimeout(total=600)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        async def stream() -> None:
            for _ in range(requests):
                try:
                    results.append(await _one_request(session, url, max_tokens))
                except aiohttp.ClientConnectionError:  # a pooled connection the server had closed
                    retried.append(1)
                    results.append(await _one_request(session, url, max_tokens))

        started = time.perf_counter()
        await asyncio.gather(*(stream() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    ttfts = sorted(r[0] for r in results)
    tokens = sum(r[1] for r in results)
    return {"concurrency": concurrency, "requests": len(results), "tokens": tokens, "wall_s": round(wall, 2),
            "tokens_per_s": round(tokens / wall, 1), "ttft_p50_s": round(statistics.median(ttfts), 3),
            "ttft_p99_s": round(ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))], 3),
            "connection_retries": len(retried)}


class TreeMemory(threading.Thread):
    """Peak summed RSS of a process and all its descendants (cheap: /proc/PID/statm), sampled every
    0.5 s; summed PSS (shared pages split fairly) only when asked, at quiet moments, because reading
    smaps takes the target's memory-map lock and would stall the engine mid-load."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak_pss, self.peak_rss = pid, 0, 0
        self.halt = threading.Event()

    def _procs(self) -> list:
        import psutil

        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def run(self) -> None:
        import psutil

        while not self.halt.wait(0.5):
            rss = 0
            for proc in self._procs():
                try:
                    rss += proc.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            self.peak_rss = max(self.peak_rss, rss)

    def sample_pss(self) -> None:
        import psutil

        pss = 0
        for proc in self._procs():
            try:
                pss += proc.memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        self.peak_pss = max(self.peak_pss, pss)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_first_success(url: str, proc: subprocess.Popen, timeout_s: float) -> float:
    import httpx

    started = time.monotonic()
    body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    while time.monotonic() - started < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"no successful request within {timeout_s} s")


def _stop(proc: subprocess.Popen) -> None:
    import psutil

    descendants = []
    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        pass
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        pass
    for victim in [proc, *descendants]:  # Ray can leave agents behind: stop everything it started
        try:
            victim.kill()
        except (psutil.NoSuchProcess, ProcessLookupError):
            pass


def measure(candidate: str, args) -> dict:
    port, direct_port = _free_port(), _free_port()
    url = f"http://127.0.0.1:{direct_port if candidate == 'ours' else port}"
    log = open(Path(args.logs) / f"{candidate}.log", "a")
    proc = subprocess.Popen([sys.executable, __file__, "--serve", candidate, "--port", str(port),
                             "--direct-port", str(direct_port)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    memory = TreeMemory(proc.pid)
    memory.start()
    try:
        first = _wait_first_success(url, proc, args.start_timeout)
        # Warm-up, not counted: the whole load once. vLLM's CPU backend (oneDNN) pays once per new
        # batch shape, and the mixed prefill/decode batches of a level only occur under that level.
        for concurrency in args.concurrency:
            asyncio.run(run_level(url, concurrency, args.requests, args.max_tokens))
        memory.sample_pss()
        levels = [asyncio.run(run_level(url, c, args.requests, args.max_tokens)) for c in args.concurrency]
        memory.sample_pss()
    finally:
        _stop(proc)
        memory.halt.set()
        memory.join()
        log.close()
    result = {"candidate": candidate, "first_success_s": round(first, 1), "levels": levels,
              "peak_pss_gib": round(memory.peak_pss / 2**30, 2), "peak_rss_gib": round(memory.peak_rss / 2**30, 2)}
    logger.info("%s", json.dumps(result))
    return result


def summarize(runs: list[dict], candidates: list[str], concurrency: list[int]) -> dict:
    summary = {}
    for name in candidates:
        mine = [r for r in runs if r["candidate"] == name]
        row = {"first_success_s": statistics.median(r["first_success_s"] for r in mine),
               "peak_pss_gib": max(r["peak_pss_gib"] for r in mine),
               "peak_rss_gib": max(r["peak_rss_gib"] for r in mine)}
        for c in concurrency:
            levels = [level for r in mine for level in r["levels"] if level["concurrency"] == c]
            row[f"c{c}"] = {key: statistics.median(level[key] for level in levels)
                            for key in ("tokens_per_s", "ttft_p50_s", "ttft_p99_s")}
        summary[name] = row
    if "bare" in summary:
        bare = {r["round"]: r for r in runs if r["candidate"] == "bare"}
        for name, row in summary.items():
            for c in concurrency:
                level = row[f"c{c}"]
                level["ratio_to_bare"] = round(level["tokens_per_s"] / summary["bare"][f"c{c}"]["tokens_per_s"], 3)
                # The same ratio within each round (side by side in time), to show the spread.
                per_round = [_tokens_per_s(r, c) / _tokens_per_s(bare[r["round"]], c)
                             for r in runs if r["candidate"] == name and r["round"] in bare]
                level["round_ratios"] = [round(x, 3) for x in per_round]
    return summary


def _tokens_per_s(run: dict, concurrency: int) -> float:
    return next(level["tokens_per_s"] for level in run["levels"] if level["concurrency"] == concurrency)


def print_table(summary: dict, concurrency: list[int]) -> None:
    head = ["candidate"] + [f"C={c} tok/s (x bare)" for c in concurrency] + \
           [f"C={c} TTFT p50/p99 s" for c in concurrency] + ["first success s", "peak PSS / RSS GiB"]
    print("| " + " | ".join(head) + " |\n|" + " --- |" * len(head))
    for name, row in summary.items():
        cells = [name]
        for c in concurrency:
            level = row[f"c{c}"]
            spread = level.get("round_ratios") or [float("nan")]
            cells.append(f"{level['tokens_per_s']:.0f} ({level.get('ratio_to_bare', float('nan')):.2f}; "
                         f"rounds {min(spread):.2f}-{max(spread):.2f})")
        cells += [f"{row[f'c{c}']['ttft_p50_s']:.2f} / {row[f'c{c}']['ttft_p99_s']:.2f}" for c in concurrency]
        cells += [f"{row['first_success_s']:.0f}", f"{row['peak_pss_gib']:.1f} / {row['peak_rss_gib']:.1f}"]
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", choices=CANDIDATES, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--direct-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=4, help="requests per stream at each level")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--start-timeout", type=float, default=600)
    parser.add_argument("--logs", default="/tmp/bench-serving-logs")
    parser.add_argument("--out", default=None)
    parser.add_argument("--model", default="tiny:small",
                        help="model reference, e.g. local:smollm2-135m-instruct (real words, 135M)")
    args = parser.parse_args()
    if args.serve:
        serve_forever(args.serve, args.port, args.direct_port)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    os.makedirs(args.logs, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ[MODEL_ENV] = args.model
    candidates = args.candidates.split(",")
    unknown = sorted(set(candidates) - set(CANDIDATES))
    if unknown:
        parser.error(f"unknown candidates {unknown}; choose from {list(CANDIDATES)}")
    runs = []
    for round_no in range(args.rounds):
        order = candidates[round_no % len(candidates):] + candidates[:round_no % len(candidates)]
        for name in order:
            logger.info("round %d: %s", round_no + 1, name)
            runs.append({**measure(name, args), "round": round_no + 1})
    summary = summarize(runs, candidates, args.concurrency)
    print_table(summary, args.concurrency)
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "runs": runs, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
