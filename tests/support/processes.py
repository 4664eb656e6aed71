"""Run jobs as a terminal does and stop what they started: Ray's shutdown can leave agents behind, so
they are matched by their temp dir."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest


def kill_processes_using(marker: str) -> None:
    """Kill every process whose command line names ``marker`` (a temp dir only that test's Ray uses)."""
    for proc in psutil.process_iter(["cmdline"]):
        if marker in " ".join(proc.info["cmdline"] or []):
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass


def run_job_locally(args: list[str], ray_tmp: str, env_extra: dict | None = None,
                    timeout: int = 900, env_replace: dict | None = None) -> tuple[int, dict | None, str, str]:
    """``python jobs/...`` as a terminal runs it, without RAY_ADDRESS: the job starts a private Ray under
    ``ray_tmp`` (inheriting this env, or ``env_replace`` instead), and whatever it leaves behind is
    stopped afterwards.

    Returns (exit code, the JSON summary or None, stdout, stderr)."""
    env = {**(os.environ if env_replace is None else env_replace), "RAY_TMPDIR": ray_tmp, **(env_extra or {})}
    env.pop("RAY_ADDRESS", None)
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, *args], cwd=repo, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"{args[:2]} did not finish in {timeout} s:\n{stderr[-5000:]}")
    finally:
        kill_processes_using(ray_tmp)
    lines = stdout.strip().splitlines()
    summary = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None
    return proc.returncode, summary, stdout, stderr


def processes_matching(text: str) -> list[psutil.Process]:
    """Live processes whose command line (or Ray's process title) contains ``text``."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if text in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


def kill_from_outside(text: str, children_only: str | None = None) -> list[int]:
    """SIGKILL the processes matching ``text``, as the OS's OOM killer or a crash would end them; with
    ``children_only``, only those descended from a process matching that. Returns the pids killed."""
    targets = processes_matching(text)
    if children_only is not None:
        parents = processes_matching(children_only)
        descendants = {child.pid for parent in parents for child in parent.children(recursive=True)}
        targets = [proc for proc in targets if proc.pid in descendants]
    killed = []
    for proc in targets:
        try:
            proc.kill()
            killed.append(proc.pid)
        except psutil.NoSuchProcess:
            pass
    return killed


def wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 600, interval: float = 0.2) -> None:
    """Poll ``condition()`` until true while ``process`` still runs."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if process.poll() is not None:
            pytest.fail(f"the job ended before {what}:\n{process.communicate()[1][-4000:]}")
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")
