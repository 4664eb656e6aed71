"""Data-plane benchmark: the whole generate job against the instant backend, so only our own work is
measured (reading and planning the openings, Ray Data, the actors' loop, filters, records, shards,
compaction, JSONL).

Run from the repo root on an idle machine::

    .venv/bin/python bench/data_plane.py                        # 10k and 100k openings
    .venv/bin/python bench/data_plane.py --sizes 10000 --keep   # one size, keep the output

Both roles use ``chat.backend: instant`` (ultrachat/devtools/instant_backend.py): a reply is built in
process at once. Rounds are the paper's (sector I 3-7, II and III 2-4), so a dialogue makes the same
number of calls as in a real run. ``jobs/generate.py`` runs as a subprocess with its own local Ray
(2 CPUs); psutil samples the driver's and the workers' memory every 0.5 s.

Reported per size: dialogues/s over the job's wall time (Ray start to summary) and over the dialogue
window (first dialogue start to last end), part files written, final data files, driver peak RSS, the
largest actor's peak RSS. The goal is a data plane that is never the bottleneck: >= 20x the dialogues/s
one 8x H100 node generates by the cost plan (1,468,352 dialogues in 57.9 h: 7.04/s, docs/operations.md),
that is >= 141 dialogues/s, with cost growing linearly in the openings.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from generation import REPO, base_env, kill_group, tail

logger = logging.getLogger("bench.data_plane")

NODE_DIALOGUES_PER_S = 1_468_352 / (57.9 * 3600)  # the cost plan's 8x H100 node (docs/operations.md)
GOAL = 20 * NODE_DIALOGUES_PER_S
WORDS = ("tides", "volcanoes", "bread", "printing", "photosynthesis", "harmony", "interest", "glaciers",
         "chess", "honeybees", "panels", "roads", "sourdough", "holes", "reefs", "vaccines", "bridges", "maps")


def write_openings(path: Path, count: int, seed: int) -> None:
    """``count`` seeded opening lines over the three sectors (nothing stored in the repo)."""
    rng = random.Random(seed)
    with path.open("w") as handle:
        for i in range(count):
            topic = " and ".join(rng.sample(WORDS, 2))
            text = f"How do {topic} relate, and what should a curious beginner read first? (opening {i})"
            handle.write(json.dumps({"sector": ("I", "II", "III")[i % 3], "text": text}) + "\n")


class MemorySampler(threading.Thread):
    """Peak RSS of the driver process and of each Ray worker, by role (from the process title)."""

    def __init__(self, driver_pid: int):
        super().__init__(daemon=True)
        self.driver_pid, self.stop_event = driver_pid, threading.Event()
        self.peaks: dict[str, int] = {"driver": 0, "actor": 0, "other_worker": 0}

    def run(self) -> None:
        import psutil

        while not self.stop_event.wait(0.5):
            try:
                driver = psutil.Process(self.driver_pid)
                self.peaks["driver"] = max(self.peaks["driver"], driver.memory_info().rss)
                children = driver.children(recursive=True)
            except psutil.NoSuchProcess:
                return
            for child in children:
                try:
                    title = " ".join(child.cmdline())
                    rss = child.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                if "DialogueWorker" in title:
                    self.peaks["actor"] = max(self.peaks["actor"], rss)
                elif title.startswith("ray::"):
                    self.peaks["other_worker"] = max(self.peaks["other_worker"], rss)


def run_size(count: int, work: Path, timeout_s: float) -> dict:
    import pyarrow.parquet as pq
    import yaml

    openings = work / f"openings-{count}.jsonl"
    write_openings(openings, count, seed=count)
    out = work / f"out-{count}"
    chat = {"backend": "instant"}
    config = {"output_dir": str(out), "openings": {"path": str(openings)},
              "user": {"chat": chat, "sampling": {"max_tokens": 64}},
              "assistant": {"chat": chat, "sampling": {"max_tokens": 64}},
              "actors": {"min_actors": 1, "max_actors": 1, "num_cpus": 1, "dialogues_per_batch": 64,
                         "batches_in_flight": 4},
              "ray": {"local_num_cpus": 2}}
    config_path = work / f"generate-{count}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    log_path = work / f"generate-{count}.log"
    logger.info("%d openings: running the generate job (log: %s)", count, log_path)
    started = time.monotonic()
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, str(REPO / "jobs" / "generate.py"), "--config", str(config_path)],
                                   cwd=REPO, env=base_env(), stdout=subprocess.PIPE, stderr=log, text=True,
                                   start_new_session=True)
        sampler = MemorySampler(process.pid)
        sampler.start()
        try:
            stdout, _ = process.communicate(timeout=timeout_s)
        except BaseException:
            kill_group(process)
            raise
        finally:
            sampler.stop_event.set()
    wall_s = time.monotonic() - started
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    summary = json.loads(lines[-1]) if lines else {}
    if process.returncode != 0 or summary.get("status") != "succeeded":
        raise RuntimeError(f"generate failed (exit {process.returncode}): {summary}\n{tail(log_path)}")
    counts = summary["counts"]
    data = sorted((out / "dialogues").glob("data-*.parquet"))
    columns = pq.read_table(out / "dialogues", columns=["started_at", "seconds"]).to_pydict()
    window = max(s + d for s, d in zip(columns["started_at"], columns["seconds"])) - min(columns["started_at"])
    result = {"openings": count, "dialogues": counts["dialogues"], "wall_s": round(wall_s, 1),
              "window_s": round(window, 1), "dialogues_per_s_wall": round(counts["dialogues"] / wall_s, 1),
              "dialogues_per_s_window": round(counts["dialogues"] / window, 1),
              "parts_written": counts["shards_compacted"], "data_files": len(data),
              "data_mb": round(sum(p.stat().st_size for p in data) / 2**20, 1),
              "driver_peak_mb": round(sampler.peaks["driver"] / 2**20),
              "actor_peak_mb": round(sampler.peaks["actor"] / 2**20),
              "other_worker_peak_mb": round(sampler.peaks["other_worker"] / 2**20),
              "statuses": {k: v for k, v in counts.items() if k.startswith("status_")}}
    logger.info("%d openings: %s", count, result)
    return result


def markdown(results: list[dict]) -> str:
    rows = ["| openings | dialogues/s (job wall) | dialogues/s (window) | x goal | wall s | parts -> data files | "
            "driver peak MB | actor peak MB |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        rows.append(f"| {r['openings']:,} | {r['dialogues_per_s_wall']} | {r['dialogues_per_s_window']} | "
                    f"{r['dialogues_per_s_wall'] / GOAL:.1f} | {r['wall_s']} | {r['parts_written']} -> "
                    f"{r['data_files']} ({r['data_mb']} MB) | {r['driver_peak_mb']} | {r['actor_peak_mb']} |")
    return "\n".join(rows) + f"\n\nGoal: >= {GOAL:.0f} dialogues/s (20 x {NODE_DIALOGUES_PER_S:.2f}/s per 8x H100 node)."


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--out", default="data_plane_results.json")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="uc-data-plane-"))
    try:
        results = [run_size(count, work, args.timeout) for count in args.sizes]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
