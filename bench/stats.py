"""Stats benchmark: the Ray Data stats job side by side with a plain single-process loop.

Run from the repo root on an idle machine::

    .venv/bin/python bench/stats.py                          # 20k for the ratio, 10k and 50k for growth
    .venv/bin/python bench/stats.py --ratio 20000 --growth 10000 100000 --sample 10000 --out bench-stats.json

It prints a Markdown table (stdout; logs on stderr) and writes every number to ``--out`` (JSON).

Data: synthetic dialogues written as 8 Parquet files in our generate layout (status kept, sectors
I-III): 1-7 rounds, user turns of 5-30 and assistant turns of 30-150 words drawn from a Zipf
distribution over a 5,000-word vocabulary (seeded), so MTLD, lengths and MinHash see realistic work
(~4 rounds and ~1,600 SmolLM2 tokens per dialogue: the paper's UltraChat has 3.8 and 1,467).

(a) Speed. The same non-judge metrics on the same N dialogues (tokenizer: SmolLM2's; MTLD per
    message and per dialogue; duplicate keys and shares; topic similarity of a seeded sample
    (``--sample``, default 2,000: embedding is a fixed cost that does not grow with the data) with
    all-MiniLM-L6-v2, one 256-token window per dialogue in both):
    - ``jobs/stats.py`` on a private local Ray (2 CPUs, 2 actors); its own timings (Ray start-up
      excluded: ``counts.timings.total_s``);
    - a plain loop in one process: the same library code (the meter class called batch by batch,
      the duplicate shares, the encoder with torch's 2 threads) without Ray.
    Ratio = loop seconds / job seconds, overall and for the metrics pass alone. Goal >= 1.7 on 2 cores.
(b) Growth. The job at two sizes: seconds per dialogue (goal: constant) and the driver's peak RSS
    (goal: flat), then the core-hours a 1.5M-dialogue set would take at the larger size's rate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))
FILES = 8


def write_dialogues(out: Path, count: int, seed: int = 0) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ultrachat.generation.records import DIALOGUE_SCHEMA

    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = np.array(["".join(rng.choice(letters, rng.integers(2, 10))) for _ in range(5000)])
    ranks = np.arange(1, len(vocab) + 1)
    zipf = (1 / ranks) / (1 / ranks).sum()

    def utterance(low: int, high: int) -> str:
        words = vocab[rng.choice(len(vocab), rng.integers(low, high), p=zipf)]
        return " ".join(words).capitalize() + "."

    out.mkdir(parents=True, exist_ok=True)
    per_file = -(-count // FILES)
    for part in range(FILES):
        rows = []
        for i in range(part * per_file, min(count, (part + 1) * per_file)):
            messages = []
            for _ in range(int(rng.integers(1, 8))):
                messages += [{"role": "user", "content": utterance(5, 30)},
                             {"role": "assistant", "content": utterance(30, 150)}]
            rows.append({"id": f"d{i}", "sector": ["I", "II", "III"][i % 3], "messages": messages,
                         "num_rounds": len(messages) // 2, "status": "kept", "filter_reasons": [], "turns": []})
        pq.write_table(pa.Table.from_pylist(rows, schema=DIALOGUE_SCHEMA), out / f"part-{part}.parquet")
    return out


SAMPLE = [2000]


def stats_overrides(data: Path, out: Path) -> list[str]:
    return [f"input.path={data}", f"output_dir={out}", "plots=false", "topic.embedding.max_windows=1",
            f"topic.sample_size={SAMPLE[0]}",
            "actors.min_actors=2", "actors.max_actors=2", "actors.num_cpus=1", "ray.local_num_cpus=2",
            "ray.log_to_driver=false", "ray.data_progress=false"]


def run_job(data: Path, out: Path) -> dict:
    """jobs/stats.py in a subprocess with its own local Ray; its summary and the driver's peak RSS."""
    import psutil

    env = {**os.environ, "RAY_ADDRESS": "", "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS")
    process = subprocess.Popen([sys.executable, "jobs/stats.py", "--config", "configs/stats/local.yaml",
                                *stats_overrides(data, out)], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    peak, driver = [0], psutil.Process(process.pid)

    def watch():
        while process.poll() is None:
            try:
                peak[0] = max(peak[0], driver.memory_info().rss)
            except psutil.NoSuchProcess:
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    stdout, _ = process.communicate()
    watcher.join()
    summary = json.loads(stdout.strip().splitlines()[-1])
    if process.returncode != 0:
        raise RuntimeError(f"stats job failed: {summary}")
    return {"summary": summary, "driver_peak_rss_mb": round(peak[0] / 2**20)}


def run_loop(data: Path, work: Path) -> dict:
    """The same metrics, one process, no Ray."""
    import pickle

    import pyarrow as pa
    import pyarrow.parquet as pq

    from ultrachat.config import load_config
    from ultrachat.models.source import resolve_model
    from ultrachat.stats.aggregate import Aggregate
    from ultrachat.stats.dialogues import CANONICAL_SCHEMA, to_canonical
    from ultrachat.stats.measure import DialogueMeter, duplicate_shares, render
    from ultrachat.stats.sample import BottomK
    from ultrachat.stats.topic import LocalEncoder, resolve_embedder, similarity_stats

    config = load_config("stats", REPO / "configs" / "stats" / "local.yaml", stats_overrides(data, work / "unused"))
    started = time.monotonic()
    meter = DialogueMeter(resolve_model(config.tokenizer), config.mtld.threshold, ["kept"], {"topic": config.topic.seed},
                          str(work / "keys"), {"num_perm": 64, "bands": 16, "shingle_words": 3})
    aggregate, sample = Aggregate(), BottomK(config.topic.sample_size)
    for file in sorted(data.glob("*.parquet")):
        table = pq.read_table(file, columns=["id", "sector", "status", "messages"])
        for batch in table.to_batches(config.actors.dialogues_per_batch):
            rows = [to_canonical(r, f"{file}#") for r in batch.to_pylist()]
            result = pickle.loads(meter(pa.Table.from_pylist(rows, schema=CANONICAL_SCHEMA))["result"][0])
            aggregate.merge(result["aggregate"])
            sample.add(*result["candidates"]["topic"])
    measured = time.monotonic() - started
    duplicates = duplicate_shares(str(work / "keys"))
    keys = set(sample.sample()[0])
    texts = {}
    for file in sorted(data.glob("*.parquet")):
        for record in pq.read_table(file, columns=["id", "messages"]).to_pylist():
            row = to_canonical(record, str(file))
            if row["key"] in keys:
                texts[row["key"]] = render(row["roles"], row["texts"])
    encoder = LocalEncoder(resolve_embedder(config.topic.embedding), config.topic.embedding)
    vectors = encoder.embed([texts[k] for k in sample.sample()[0]])
    topic = similarity_stats(vectors, config.topic.histogram_pairs, config.topic.seed)
    return {"seconds": round(time.monotonic() - started, 1), "measure_s": round(measured, 1),
            "overall": aggregate.groups["overall"].summary(), "topic": topic["mean"],
            "duplicates": duplicates["dialogue"]["share"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ratio", type=int, default=20_000, help="dialogues for the side-by-side ratio")
    parser.add_argument("--growth", type=int, nargs=2, default=[10_000, 50_000], help="two sizes for growth")
    parser.add_argument("--sample", type=int, default=2000, help="topic-similarity sample (the paper's: 10000)")
    parser.add_argument("--skip-growth", action="store_true", help="part (a) only")
    parser.add_argument("--out", default="bench-stats.json")
    args = parser.parse_args()
    SAMPLE[0] = args.sample
    results: dict = {"machine": f"{os.cpu_count()} cores"}
    with tempfile.TemporaryDirectory(prefix="bench-stats-") as tmp:
        tmp = Path(tmp)
        data = write_dialogues(tmp / f"data-{args.ratio}", args.ratio)
        job = run_job(data, tmp / "job")
        loop = run_loop(data, tmp / "loop")
        head = job["summary"]["counts"]["overall"]
        results["ratio"] = {"dialogues": args.ratio, "job_s": job["summary"]["counts"]["timings"]["total_s"],
                            "job_timings": job["summary"]["counts"]["timings"], "loop_s": loop["seconds"],
                            "loop_measure_s": loop["measure_s"], "same_figures": {
                                "job": head, "loop": {"avg_turns": loop["overall"]["avg_turns"],
                                                      "mtld": loop["overall"]["mtld"]["mean"], "topic": loop["topic"]}}}
        results["ratio"]["ratio"] = round(results["ratio"]["loop_s"] / results["ratio"]["job_s"], 2)
        results["ratio"]["measure_ratio"] = round(loop["measure_s"] / job["summary"]["counts"]["timings"]["measure_s"], 2)
        growth = []
        for size in [] if args.skip_growth else args.growth:
            data = write_dialogues(tmp / f"data-{size}", size, seed=1)
            run = run_job(data, tmp / f"job-{size}")
            timings = run["summary"]["counts"]["timings"]
            growth.append({"dialogues": size, "timings": timings, "driver_peak_rss_mb": run["driver_peak_rss_mb"]})
    if growth:
        small, large = growth
        per_dialogue = (large["timings"]["total_s"] - small["timings"]["total_s"]) / (large["dialogues"] - small["dialogues"])
        results["growth"] = growth
        results["marginal_s_per_1k"] = round(per_dialogue * 1000, 2)
        # The sample's embedding is a fixed cost; everything else grows with the data. At the paper's
        # 10k sample the embedding costs 10000/sample times the measured topic_s.
        topic_10k = large["timings"]["topic_s"] * 10_000 / args.sample
        results["topic_s_10k_sample"] = round(topic_10k)
        results["core_hours_1_5M"] = round((per_dialogue * 1_500_000 + topic_10k) * 2 / 3600, 1)
    Path(args.out).write_text(json.dumps(results, indent=2))
    r = results["ratio"]
    print(f"| benchmark | Ray Data job | plain loop | ratio | goal |\n| --- | --- | --- | --- | --- |\n"
          f"| (a) {r['dialogues']:,} dialogues, seconds | {r['job_s']} | {r['loop_s']} | **{r['ratio']}** | >= 1.7 |\n"
          f"| (a) metrics pass only, seconds | {r['job_timings']['measure_s']} | {r['loop_measure_s']} | "
          f"**{r['measure_ratio']}** | >= 1.7 |")
    for g in growth:
        print(f"| (b) {g['dialogues']:,} dialogues: {g['timings']['total_s']} s "
              f"({1000 * g['timings']['total_s'] / g['dialogues']:.2f} s per 1k), driver peak RSS "
              f"{g['driver_peak_rss_mb']} MB | | | | |")
    if growth:
        print(f"\nmarginal cost {results['marginal_s_per_1k']} s per 1k dialogues; 1.5M dialogues ~ "
              f"{results['core_hours_1_5M']} core-hours on this machine's cores")


if __name__ == "__main__":
    main()
