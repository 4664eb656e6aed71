"""Resume-plan benchmark: planning the dialogue stage over up to 1.5M opening lines.

Run from the repo root on an idle machine::

    .venv/bin/python bench/resume_plan.py                          # 10k, 100k, 1.5M
    .venv/bin/python bench/resume_plan.py --sizes 10000 100000     # quicker

For each size, a seeded generator writes the opening lines (JSONL, 1% duplicated lines, 0.5% malformed;
nothing is stored in the repo). Each measurement runs in a fresh process with its own local Ray on
127.0.0.1 (2 CPUs) and calls ``plan_dialogues`` exactly as the generate job does (read the openings
with Ray Data, plan from ids and sources):

- ``first run``: nothing in the output yet;
- ``re-run, parts``: half of the ids already in the output as per-batch shards of 64 records (a killed
  run that never compacted), 1% of them failed (retried);
- ``re-run, compacted``: the same records compacted into data files (a finished earlier run).

Reported: planning seconds (and per 100k openings, for linearity), the driver's peak RSS above its
idle RSS after ``ray.init``, the plan each filtering task receives (its pickled size), and the RSS a
Ray worker gains by fetching and using it. Goals (issue #21): driver peak < 1 GiB above idle, < 50 MB
per task, planning time linear in the openings.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))

logger = logging.getLogger("bench.resume_plan")
SECTORS = ("I", "II", "III")

# Runs in a fresh process: its peak RSS is the plan's, not the generator's or an earlier size's.
MEASURE = r'''
import json, pickle, resource, sys, time
import ray
import psutil

def main(openings, out_dir, result_path):
    from ultrachat.config.generation import OpeningsInput
    from ultrachat.generation.openings import read_openings
    from ultrachat.generation.resume import plan_dialogues

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")
    ray.data.DataContext.get_current().enable_progress_bars = False
    idle = psutil.Process().memory_info().rss
    started = time.monotonic()
    plan = plan_dialogues(read_openings(OpeningsInput(path=openings)), out_dir, None, True)
    seconds = time.monotonic() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    wanted = plan.wanted_sources()
    ref = ray.put(wanted)

    @ray.remote(num_cpus=1)
    def use(refs, sample):
        import psutil
        before = psutil.Process().memory_info().rss
        values = ray.get(refs[0])
        hits = int(values.mask(sample).sum())
        return psutil.Process().memory_info().rss - before, hits

    sample = plan.todo["source"].slice(0, 1000).to_pylist()
    task_rss, hits = ray.get(use.remote([ref], sample))
    assert hits == len(sample)
    result = {"seconds": seconds, "driver_idle_mb": idle / 2**20, "driver_peak_above_idle_mb": (peak - idle) / 2**20,
              "plan_bytes": len(pickle.dumps(wanted)), "task_rss_gain_mb": task_rss / 2**20, **plan.counts()}
    ray.shutdown()
    open(result_path, "w").write(json.dumps(result))

if __name__ == "__main__":
    main(*sys.argv[1:4])
'''


def write_openings(path: Path, count: int, seed: int) -> list[tuple[str, str]]:
    """``count`` lines: unique openings, 1% repeated lines, 0.5% malformed. Returns (sector, text) of each
    unique opening, in order."""
    rng = random.Random(seed)
    unique = []
    with path.open("w") as handle:
        for i in range(count):
            roll = rng.random()
            if roll < 0.005:
                handle.write("{not json\n")
                continue
            if roll < 0.015 and unique:
                sector, text = rng.choice(unique)
            else:
                sector, text = SECTORS[i % 3], f"Opening {i}: what should a beginner know about topic {rng.random():.12f}?"
                unique.append((sector, text))
            handle.write(json.dumps({"sector": sector, "text": text}) + "\n")
    return unique


def write_half_output(out_dir: Path, unique: list[tuple[str, str]], seed: int, compacted: bool) -> None:
    import pyarrow as pa

    from ultrachat.compaction import FileTargets, compact, parts_dir
    from ultrachat.generation.records import DIALOGUE_SCHEMA
    from ultrachat.ids import stable_id
    from ultrachat.shards import write_shard

    rng = random.Random(seed)
    schema = pa.schema([DIALOGUE_SCHEMA.field(c) for c in ("id", "status", "started_at")])
    done = unique[: len(unique) // 2]
    for start in range(0, len(done), 64):
        ids = [stable_id(sector, text) for sector, text in done[start:start + 64]]
        statuses = ["failed:api_error" if rng.random() < 0.01 else "kept" for _ in ids]
        write_shard(parts_dir(str(out_dir)), pa.table({"id": ids, "status": statuses,
                                                       "started_at": [float(start)] * len(ids)}, schema=schema))
    if compacted:
        compact(str(out_dir), schema, FileTargets(rows_per_file=100_000, mb_per_file=256))


def measure(work: Path, openings: Path, out_dir: Path, name: str) -> dict:
    script = work / "measure.py"
    script.write_text(MEASURE)
    result_path = work / f"{name}.json"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO / "platform")}
    env.pop("RAY_ADDRESS", None)
    log = work / f"{name}.log"
    with log.open("w") as handle:
        code = subprocess.call([sys.executable, str(script), str(openings), str(out_dir), str(result_path)],
                               cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)
    if code != 0:
        raise RuntimeError(f"{name}: exit {code}\n{log.read_text()[-4000:]}")
    result = json.loads(result_path.read_text())
    logger.info("%s: %s", name, result)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_500_000])
    parser.add_argument("--out", default="resume_plan_results.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="uc-resume-plan-"))
    results = []
    try:
        for count in args.sizes:
            openings = work / f"openings-{count}.jsonl"
            unique = write_openings(openings, count, seed=count)
            runs = {"first run": work / f"empty-{count}"}
            for compacted in (False, True):
                out = work / f"half-{count}-{'compacted' if compacted else 'parts'}"
                write_half_output(out, unique, seed=count, compacted=compacted)
                runs["re-run, compacted" if compacted else "re-run, parts"] = out
            for scenario, out in runs.items():
                row = measure(work, openings, out, f"{count}-{scenario.replace(' ', '').replace(',', '-')}")
                results.append({"openings": count, "scenario": scenario, **row})
            for out in runs.values():
                shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print("| openings | scenario | plan s | s per 100k | driver peak above idle MB | plan per task MB | "
          "task RSS gain MB | to run |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['openings']:,} | {r['scenario']} | {r['seconds']:.1f} | {r['seconds'] / r['openings'] * 1e5:.2f} | "
              f"{r['driver_peak_above_idle_mb']:.0f} | {r['plan_bytes'] / 2**20:.1f} | {r['task_rss_gain_mb']:.1f} | "
              f"{r['to_run']:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
