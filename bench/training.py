"""Training benchmark: the real train job side by side with a plain PyTorch loop.

Run from the repo root on an idle machine::

    .venv/bin/python bench/training.py                 # default: 160 dialogues, 2 epochs, 1 worker
    .venv/bin/python bench/training.py --dialogues 80 --epochs 1 --out bench-training.json

It prints a Markdown table (stdout; logs on stderr) and writes every number to ``--out`` (JSON).

(a) Throughput. The same ``tiny:small`` model, data (the shipped tiny corpus, repeated), max_seq_len,
    micro batch and number of optimizer steps:
    - ``jobs/train.py`` with ONE Ray Train worker (1 CPU; DeepSpeed ZeRO-0, fp32, torch AdamW), a
      private local Ray on 127.0.0.1. Its tokens/s is the mean of the per-interval ``tokens_per_s`` in
      ``metrics.jsonl`` after the first interval (startup, JIT and the first batch excluded).
    - a plain single-process loop in this process: the same examples in the same micro-batches
      (dynamic right padding), ``torch.optim.AdamW``, the same thread count as the Ray worker, timed
      over the same steps after one warm-up step.
    Ratio = Ray Train + DeepSpeed tokens/s / plain tokens/s. Goal >= 0.7.
(b) Padding. The fraction of non-padding tokens over the training rows: padding every example to
    max_seq_len, dynamic padding per micro-batch (the loop's default), and first-fit packing
    (``packing: true``). Goal with packing >= 0.95.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))


def bench_dialogues(count: int) -> list[list[dict]]:
    """The shipped tiny corpus, repeated to ``count`` dialogues."""
    from ultrachat.models.tiny import corpus_dialogues

    corpus = corpus_dialogues()
    return (corpus * (count // len(corpus) + 1))[:count]


def examples(model_dir: str, count: int, max_seq_len: int):
    """(training examples of ``count`` dialogues, tokenizer)."""
    from transformers import AutoTokenizer

    from ultrachat.training.examples import SplitStats, dialogue_examples

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    stats = SplitStats()
    return [e for d in bench_dialogues(count) for e in dialogue_examples(tokenizer, d, max_seq_len, stats)], tokenizer


def padding_fractions(rows: list[dict], max_seq_len: int, micro: int, pad_id: int) -> dict:
    from ultrachat.training.packing import non_padding_fraction, pack_examples, pad_batch

    dynamic_total = sum(max(len(e["input_ids"]) for e in rows[i:i + micro]) * len(rows[i:i + micro])
                        for i in range(0, len(rows), micro))
    tokens = sum(len(e["input_ids"]) for e in rows)
    return {"padded_to_max": non_padding_fraction(pad_batch(rows, max_seq_len, pad_id)),
            "dynamic_per_micro_batch": tokens / dynamic_total,
            "packed": non_padding_fraction(list(pack_examples(rows, max_seq_len, pad_id)))}


def plain_loop(model_dir: str, rows: list[dict], micro: int, steps: int, lr: float, threads: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from ultrachat.training.loop import collate

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), eps=1e-8)
    batches = [collate({"input_ids": [r["input_ids"] for r in rows[i:i + micro]],
                        "labels": [r["labels"] for r in rows[i:i + micro]],
                        "position_ids": [list(range(len(r["input_ids"]))) for r in rows[i:i + micro]],
                        "num_tokens": [len(r["input_ids"]) for r in rows[i:i + micro]]}, pad_id=0)
               for i in range(0, len(rows), micro)][: steps + 1]
    tokens, started = 0, None
    for index, batch in enumerate(batches):
        if index == 1:
            started = time.perf_counter()  # after one warm-up step
        loss = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], labels=batch["labels"],
                     use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if index >= 1:
            tokens += batch["num_tokens"]
    seconds = time.perf_counter() - started
    return {"tokens_per_s": tokens / seconds, "steps": len(batches) - 1, "seconds": seconds}


def ray_train_job(work: Path, data: Path, args) -> dict:
    config = {"output_dir": str(work / "out"), "run_name": "bench-train", "model": "tiny:small",
              "data": {"paths": [str(data)]}, "max_seq_len": args.max_seq_len, "num_workers": 1,
              "cpus_per_worker": 1, "zero_stage": 0, "global_batch_size": args.micro_batch,
              "micro_batch_size": args.micro_batch, "learning_rate": 1e-4, "epochs": args.epochs,
              "log_every_steps": args.log_every, "checkpoint_every_steps": 10**6,
              "ray": {"local_num_cpus": 2}}
    (work / "train.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(REPO / "jobs" / "train.py"), "--config", str(work / "train.yaml")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode:
        raise RuntimeError(done.stderr[-4000:])
    entries = [json.loads(line) for line in (work / "out" / "metrics.jsonl").read_text().splitlines()]
    steady = [e["tokens_per_s"] for e in entries[1:]] or [entries[0]["tokens_per_s"]]
    return {"tokens_per_s": sum(steady) / len(steady), "steps": entries[-1]["step"],
            "job_seconds": time.perf_counter() - started, "intervals": len(entries)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dialogues", type=int, default=160)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-seq-len", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--log-every", type=int, default=40)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ultrachat.models.source import resolve_model

    model_dir = resolve_model("tiny:small")
    rows, tokenizer = examples(model_dir, args.dialogues, args.max_seq_len)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work = Path(tmp)
        data = work / "data.jsonl"
        data.write_text("".join(json.dumps({"messages": d}) + "\n" for d in bench_dialogues(args.dialogues)))
        ray_side = ray_train_job(work, data, args)
    plain = plain_loop(model_dir, rows * args.epochs, args.micro_batch, ray_side["steps"], 1e-4, threads=1)
    padding = padding_fractions(rows, args.max_seq_len, args.micro_batch, tokenizer.pad_token_id or 0)
    result = {"args": vars(args), "examples": len(rows), "ray_train_deepspeed": ray_side, "plain_pytorch": plain,
              "ratio": ray_side["tokens_per_s"] / plain["tokens_per_s"], "non_padding_fraction": padding}
    print("| measure | value |\n| --- | --- |")
    print(f"| Ray Train + DeepSpeed, 1 worker, tokens/s | {ray_side['tokens_per_s']:.0f} |")
    print(f"| plain PyTorch loop, 1 thread, tokens/s | {plain['tokens_per_s']:.0f} |")
    print(f"| ratio (goal >= 0.7) | {result['ratio']:.2f} |")
    for key, value in padding.items():
        print(f"| non-padding fraction, {key.replace('_', ' ')} | {value:.3f} |")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
