"""Ray Data's two Parquet readers side by side: why the jobs set ``ray.parquet_reader: v1``.

Run from the repo root on an idle machine::

    .venv/bin/python bench/parquet_reader.py            # both parts
    .venv/bin/python bench/parquet_reader.py --rounds 9 --skip-job

(a) One local Ray (2 CPUs): ``read_parquet(folder).materialize()`` of a small folder (6 files of 4
    rows, like a stage's per-batch shards), the V1 and V2 readers alternating, ``--rounds`` times each;
    once on an idle node and once while an actor holds 1 of its 2 CPUs (a stage's pool at work).
(b) The fake-server construct-and-dialogues job of tests/integration/test_construction.py (three
    construction waves, candidates, openings, dialogues; a private local Ray each), run with
    ``ray.parquet_reader=v1`` and ``=v2`` alternately: wall seconds per job.

Reported: median seconds per read or job, and the ratio v2/v1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "support"), str(REPO / "tests" / "integration")]


def write_folder(folder: Path, files: int = 6, rows: int = 4) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    for f in range(files):
        pq.write_table(pa.table({"id": [f"{f}-{r}" for r in range(rows)], "text": ["x" * 200] * rows}),
                       folder / f"part-{f}.parquet")


def reads(rounds: int, folder: Path) -> dict:
    import ray

    from ultrachat.config.schema import RaySettings
    from ultrachat.ray_runtime import init_ray

    init_ray(RaySettings(local_num_cpus=2, data_progress=False), "bench-parquet")
    context = ray.data.DataContext.get_current()

    @ray.remote(num_cpus=1)
    class Busy:
        def ready(self) -> bool:
            return True

    def timed(v2: bool) -> float:
        context.use_datasource_v2 = v2
        started = time.perf_counter()
        assert ray.data.read_parquet(str(folder)).materialize().count() == 24
        return time.perf_counter() - started

    timed(False), timed(True)  # warm-up: worker processes, imports
    out = {}
    for label in ("idle", "busy"):
        busy = Busy.remote() if label == "busy" else None
        if busy is not None:
            ray.get(busy.ready.remote())
        times = {"v1": [], "v2": []}
        for _ in range(rounds):
            times["v1"].append(timed(False))
            times["v2"].append(timed(True))
        if busy is not None:
            ray.kill(busy)
        out[label] = {k: round(statistics.median(v), 3) for k, v in times.items()}
        out[label]["ratio_v2_over_v1"] = round(out[label]["v2"] / out[label]["v1"], 1)
    ray.shutdown()
    return out


def jobs(rounds: int, tmp: Path) -> dict:
    from generate_runs import run_job
    from processes import kill_processes_using
    from test_construction import construction_config, reply
    from ultrachat.devtools.fake_openai import FakeBehavior, FakeOpenAIServer

    os.environ["UC_FAKE_KEY"] = "k"
    times = {"v1": [], "v2": []}
    with FakeOpenAIServer(FakeBehavior(reply_fn=reply)) as server:
        for i in range(rounds):
            for reader in ("v1", "v2"):
                run_dir = tmp / f"job-{reader}-{i}"
                run_dir.mkdir()
                ray_tmp = tempfile.mkdtemp(prefix="ucbpq-", dir="/tmp")
                started = time.perf_counter()
                try:
                    code, _, stderr = run_job(construction_config(run_dir, server), f"ray.parquet_reader={reader}",
                                              env_extra={"RAY_TMPDIR": ray_tmp})
                finally:
                    kill_processes_using(ray_tmp)
                if code != 0:
                    raise RuntimeError(f"the job with {reader} failed:\n{stderr[-3000:]}")
                times[reader].append(time.perf_counter() - started)
                print(f"job {reader} round {i + 1}: {times[reader][-1]:.1f} s", flush=True)
    out = {k: round(statistics.median(v), 1) for k, v in times.items()}
    out["ratio_v2_over_v1"] = round(out["v2"] / out["v1"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--job-rounds", type=int, default=2)
    parser.add_argument("--skip-job", action="store_true")
    parser.add_argument("--out", default="parquet_reader_results.json")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="bench-parquet-") as tmp:
        folder = Path(tmp) / "shards"
        write_folder(folder)
        # The reads run in a child process: its Ray must be gone before the jobs start their own.
        code = ("import json, sys; sys.path.insert(0, 'bench'); from parquet_reader import reads; "
                f"print(json.dumps(reads({args.rounds}, __import__('pathlib').Path({str(folder)!r}))))")
        done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
        results = {"reads": json.loads(done.stdout.strip().splitlines()[-1])}
        print(json.dumps(results["reads"], indent=2), flush=True)
        if not args.skip_job:
            results["job"] = jobs(args.job_rounds, Path(tmp))
    print(json.dumps(results, indent=2))
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
