"""DPO benchmark: the train job's ``method: dpo`` side by side with a plain PyTorch DPO loop, and the
memory of the reference-model options.

Run from the repo root on an idle machine::

    .venv/bin/python bench/dpo.py                      # default: 192 pairs, 2 epochs
    .venv/bin/python bench/dpo.py --pairs 96 --epochs 1 --out bench-dpo.json

It prints a Markdown table (stdout; logs on stderr) and writes every number to ``--out`` (JSON).

(a) Throughput. The same ``tiny:small`` model, preference pairs (tests/support's learnable rule over
    the shipped tiny corpus), max_seq_len, micro batch and number of optimizer steps:
    - ``jobs/train.py`` with ``method: dpo`` and ONE Ray Train worker (1 CPU; DeepSpeed ZeRO-0, fp32,
      torch AdamW; the reference a frozen copy), a private local Ray on 127.0.0.1. Its tokens/s is the
      mean of the per-interval ``tokens_per_s`` in ``metrics.jsonl`` after the first interval.
    - a plain single-process loop in this process: the same pairs in the same micro-batches, a frozen
      ``copy.deepcopy`` reference, one concatenated forward per model, the DPO loss, ``torch.optim.AdamW``,
      the same thread count, timed over the same steps after one warm-up step.
    Tokens count both sequences of a pair (prompt + answer, twice). Ratio = job / plain; goal >= 0.85.
(b) Reference memory. The peak RSS of the Ray Train workers (sampled from /proc) in short runs of 2
    workers each on SmolLM2-135M (fp32): ZeRO-2 with a whole frozen copy, ZeRO-2 with precomputed
    reference log-probs (no reference weights), ZeRO-3 with the copy partitioned by a second DeepSpeed
    engine, and LoRA (ZeRO-2) with the base as reference (adapters disabled), each against the same run
    with ``method: sft`` (no reference at all) in the same layout.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))
sys.path.insert(0, str(REPO / "tests" / "support"))


def pair_rows(model_dir: str, data: Path, max_seq_len: int, max_prompt_length: int) -> list[dict]:
    from collections import Counter

    from transformers import AutoTokenizer

    from ultrachat.training.preference_pairs import normalize_pair, pair_example

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = []
    for line in data.read_text().splitlines():
        pair, _ = normalize_pair(json.loads(line))
        rows.append(pair_example(tokenizer, pair, max_seq_len, max_prompt_length, Counter()))
    return rows


def plain_loop(model_dir: str, rows: list[dict], micro: int, steps: int, lr: float, beta: float,
               threads: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from ultrachat.config.training import Dpo
    from ultrachat.training.dpo import collate_pairs, dpo_loss, pair_logps

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    policy = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    policy.train()
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=lr, betas=(0.9, 0.95), eps=1e-8)
    columns = ("chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels", "num_tokens")
    batches = [collate_pairs({c: [r[c] for r in rows[i:i + micro]] for c in columns}, pad_id=0)
               for i in range(0, len(rows), micro)]
    batches = (batches * (steps // len(batches) + 2))[: steps + 1]
    config = Dpo(beta=beta)
    tokens, started = 0, None
    for index, batch in enumerate(batches):
        if index == 1:
            started = time.perf_counter()  # after one warm-up step
        with torch.no_grad():
            ref_c, ref_r, _, _ = pair_logps(reference, batch)
        pol_c, pol_r, _, _ = pair_logps(policy, batch)
        loss, *_ = dpo_loss(pol_c, pol_r, ref_c, ref_r, config)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if index >= 1:
            tokens += batch["num_tokens"]
    seconds = time.perf_counter() - started
    return {"tokens_per_s": tokens / seconds, "steps": len(batches) - 1, "seconds": seconds}


class WorkerPeak:
    """Peak RSS (MB) of the Ray Train worker processes (``ray::RayTrainWorker``), sampled every 0.2 s."""

    def __init__(self):
        self.peak: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.wait(0.2):
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    if b"RayTrainWorker" not in Path(f"/proc/{pid}/cmdline").read_bytes()[:200]:
                        continue
                    rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page / 2**20
                except (OSError, ValueError, IndexError):
                    continue
                self.peak[int(pid)] = max(self.peak.get(int(pid), 0.0), rss)

    def max_mb(self) -> float:
        return max(self.peak.values(), default=0.0)


def train_job(work: Path, name: str, config: dict) -> dict:
    out = work / name
    config = {"output_dir": str(out), "run_name": f"bench-dpo-{name}", "model": "tiny:small",
              "ray": {"local_num_cpus": 2}, **config}  # config may name another model
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    started = time.perf_counter()
    with WorkerPeak() as peak:
        done = subprocess.run([sys.executable, str(REPO / "jobs" / "train.py"), "--config", str(path)],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode:
        raise RuntimeError(f"{name}: train job failed:\n{done.stderr[-4000:]}")
    entries = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steady = [e["tokens_per_s"] for e in entries[1:]] or [entries[0]["tokens_per_s"]]
    return {"tokens_per_s": sum(steady) / len(steady), "steps": entries[-1]["step"],
            "job_seconds": time.perf_counter() - started, "worker_peak_rss_mb": peak.max_mb(),
            "final": entries[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=192)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-seq-len", type=int, default=256)
    parser.add_argument("--max-prompt-length", type=int, default=128)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--log-every", type=int, default=16)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--skip-memory", action="store_true", help="only (a)")
    parser.add_argument("--skip-throughput", action="store_true", help="only (b)")
    parser.add_argument("--memory-model", default="local:smollm2-135m-instruct",
                        help="the model of (b)'s runs (fp32: 135M parameters are 0.54 GB of weights)")
    parser.add_argument("--memory-pairs", type=int, default=16, help="pairs of (b)'s runs")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from training_runs import write_preferences

    from ultrachat.models.source import resolve_model

    model_dir = resolve_model("tiny:small")
    results: dict = {"args": vars(args), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with tempfile.TemporaryDirectory(prefix="bench-dpo-") as tmp:
        work = Path(tmp)
        data = write_preferences(work / "prefs.jsonl", count=args.pairs)
        rows = pair_rows(model_dir, data, args.max_seq_len, args.max_prompt_length)
        dpo = {"method": "dpo", "dpo": {"beta": args.beta, "max_prompt_length": args.max_prompt_length},
               "data": {"paths": [str(data)]}, "max_seq_len": args.max_seq_len, "learning_rate": 1e-5,
               "checkpoint_every_steps": 10**6, "warmup_ratio": 0.0}
        if not args.skip_throughput:
            job = train_job(work, "throughput", {**dpo, "num_workers": 1, "cpus_per_worker": 1, "zero_stage": 0,
                                                 "global_batch_size": args.micro_batch,
                                                 "micro_batch_size": args.micro_batch, "epochs": args.epochs,
                                                 "log_every_steps": args.log_every})
            plain = plain_loop(model_dir, rows, args.micro_batch, job["steps"], 1e-5, args.beta, threads=1)
            results["a"] = {"job": job, "plain": plain, "ratio": job["tokens_per_s"] / plain["tokens_per_s"],
                            "goal": 0.85}
        if not args.skip_memory:
            # A model big enough for a reference copy to show above the processes' own footprint.
            short = {"model": args.memory_model, "num_workers": 2, "cpus_per_worker": 0.5, "global_batch_size": 8,
                     "micro_batch_size": 2, "epochs": 1, "log_every_steps": 4}
            lora = {"lora": {"rank": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]}}
            memory_data = write_preferences(work / "prefs-memory.jsonl", count=args.memory_pairs)
            dpo = {**dpo, "data": {"paths": [str(memory_data)]}}
            sft_data = work / "sft.jsonl"
            sft_data.write_text("\n".join(json.dumps({"messages": json.loads(line)["chosen"]})
                                          for line in memory_data.read_text().splitlines()) + "\n")
            sft = {**{k: v for k, v in dpo.items() if k not in ("method", "dpo")},
                   "data": {"paths": [str(sft_data)]}}
            # Each DPO option beside SFT in the same layout (ZeRO-2, ZeRO-3, LoRA): DPO's own rows (a chosen
            # and a rejected sequence per pair) show as the precomputed option's excess over SFT.
            runs = {
                "zero2": {"sft": {**sft, **short, "zero_stage": 2},
                          "dpo_frozen_copy": {**dpo, **short, "zero_stage": 2},
                          "dpo_precomputed": {**dpo, **short, "zero_stage": 2,
                                              "dpo": {**dpo["dpo"], "reference": "precomputed"}}},
                "zero3": {"sft": {**sft, **short, "zero_stage": 3},
                          "dpo_partitioned_copy": {**dpo, **short, "zero_stage": 3}},
                "lora": {"sft": {**sft, **short, "zero_stage": 2, **lora},
                         "dpo_adapters_off": {**dpo, **short, "zero_stage": 2, **lora}},
            }
            results["b"] = {layout: {name: train_job(work, f"mem-{layout}-{name}", config)
                                     for name, config in options.items()} for layout, options in runs.items()}
    print(markdown(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1, default=str))


def markdown(results: dict) -> str:
    lines = []
    if "a" in results:
        a = results["a"]
        lines += ["| benchmark | job | plain PyTorch | ratio | goal |", "| --- | --- | --- | --- | --- |",
                  f"| (a) DPO tokens/s, 1 worker, tiny:small | {a['job']['tokens_per_s']:.0f} | "
                  f"{a['plain']['tokens_per_s']:.0f} | {a['ratio']:.3f} | >= {a['goal']} |", ""]
    if "b" in results:
        lines += [f"| (b) layout, 2 workers, {results['args']['memory_model']} | run | worker peak RSS (MB) | "
                  f"above SFT in the same layout |", "| --- | --- | --- | --- |"]
        for layout, runs in results["b"].items():
            base = runs["sft"]["worker_peak_rss_mb"]
            for name, run in runs.items():
                lines.append(f"| {layout} | {name} | {run['worker_peak_rss_mb']:.0f} | "
                             f"{run['worker_peak_rss_mb'] - base:+.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
