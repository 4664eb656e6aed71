"""Where a machine's CPU goes while a benchmark runs: per-process-group CPU and wake-ups.

A daemon thread reads /proc every ``interval_s`` (utime+stime per process; per-thread scheduler
timeslices from ``/proc/<pid>/task/<tid>/schedstat``, i.e. how often each process was put on a
core). ``share(start, end)`` averages the groups over the samples inside a window, so a benchmark
can say, for its own steady window, how many cores the engine got and who took the rest.
Linux only; on other systems the sampler records nothing and ``share`` returns {}.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter

# (substring of the command line or process name, group): the first match names the group.
GROUPS = (
    ("VLLM::Worker", "vLLM worker (the model's compute)"),
    ("VLLM::EngineCore", "vLLM engine core (scheduler)"),
    ("jobs/generate.py", "job driver (Ray Data executor)"),
    ("raw_vllm.py", "raw replay client (AsyncLLM front end)"),
    ("ray::MapWorker", "generation actor (dialogues, AsyncLLM front end, rendering)"),
    ("ray::DashboardAgent", "Ray daemons (raylet, GCS, dashboard, agents)"),
    ("ray::RuntimeEnvAgent", "Ray daemons (raylet, GCS, dashboard, agents)"),
    ("raylet", "Ray daemons (raylet, GCS, dashboard, agents)"),
    ("gcs_server", "Ray daemons (raylet, GCS, dashboard, agents)"),
    ("dashboard", "Ray daemons (raylet, GCS, dashboard, agents)"),
    ("log_monitor", "Ray daemons (raylet, GCS, dashboard, agents)"),
    ("ray/autoscaler", "Ray daemons (raylet, GCS, dashboard, agents)"),
    ("ray::", "other Ray workers (Ray Data's and the stage's small actors, idle workers)"),
)
OTHER = "everything else"


def _group(comm: str, cmdline: str) -> str:
    for needle, group in GROUPS:
        if needle in comm or needle in cmdline:
            return group
    return OTHER


def _read(pid: str) -> tuple[int, int, str] | None:
    """(CPU ns, timeslices, group) of one process, summed over its threads."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read(400).replace(b"\0", b" ").decode(errors="replace")
        run = slices = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as handle:
                fields = handle.read().split()
            run, slices = run + int(fields[0]), slices + int(fields[2])
        return run, slices, _group(comm, cmdline)
    except (OSError, ValueError, IndexError):  # the process ended while being read
        return None


def _snapshot() -> dict[int, tuple[int, int, str]]:
    found = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit() and (row := _read(pid)) is not None:
            found[int(pid)] = row
    return found


class CpuShare:
    """Context manager: samples in the background between enter and exit."""

    def __init__(self, interval_s: float = 2.0):
        self.interval_s = interval_s
        self.samples: list[tuple[float, float, dict[str, float], dict[str, float]]] = []  # (t0, t1, cores, wakes/s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-share", daemon=True)
        self.enabled = os.path.isfile("/proc/self/task/%d/schedstat" % threading.get_native_id())

    def __enter__(self) -> "CpuShare":
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        before, t0 = _snapshot(), time.time()
        while not self._stop.wait(self.interval_s):
            after, t1 = _snapshot(), time.time()
            cores, wakes = Counter(), Counter()
            for pid, (run, slices, group) in after.items():
                if pid in before:  # a process born inside the interval is counted from the next one
                    cores[group] += (run - before[pid][0]) / 1e9 / (t1 - t0)
                    wakes[group] += (slices - before[pid][1]) / (t1 - t0)
            self.samples.append((t0, t1, dict(cores), dict(wakes)))
            before, t0 = after, t1

    def share(self, start: float, end: float) -> dict[str, dict[str, float]]:
        """Mean cores and times-scheduled per second of each group over the samples inside [start, end]."""
        inside = [s for s in self.samples if s[0] >= start and s[1] <= end]
        if not inside:
            return {}
        cores, wakes = Counter(), Counter()
        for _, _, c, w in inside:
            cores.update(c)
            wakes.update(w)
        return {group: {"cores": cores[group] / len(inside), "scheduled_per_s": wakes[group] / len(inside)}
                for group in sorted(cores, key=cores.get, reverse=True)}
