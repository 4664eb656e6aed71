"""A Ray head started with `ray start` on 127.0.0.1, as a cluster's head pod runs it, and stopped whole."""

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from ports import free_port
from processes import kill_processes_using


@contextmanager
def ray_head_on_loopback(prefix: str = "ucray-"):
    """Yields {"address": GCS address, "dashboard": http URL, "temp_dir", "metrics": the URL Prometheus
    would scrape (the node's metrics agent)}. The head and its workers inherit this process's
    environment as it is now. On exit, exactly the processes this head started are stopped."""
    # Short path: Ray's unix sockets live under the temp dir and have a 107-byte limit.
    temp_dir = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    gcs_port, dashboard_port, metrics_port = free_port(), free_port(), free_port()
    ray_bin = str(Path(sys.executable).with_name("ray"))
    cmd = [ray_bin, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs_port}",
           "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
           "--num-cpus=2", f"--temp-dir={temp_dir}", "--disable-usage-stats", f"--metrics-export-port={metrics_port}"]
    # Job entrypoints say `python`: make that this venv's interpreter, as the cluster image's would be.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    started = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    if started.returncode != 0:
        kill_processes_using(temp_dir)
        pytest.fail(f"`ray start` failed:\n{started.stdout}\n{started.stderr}")
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    try:
        _wait_for_dashboard(dashboard)
        yield {"address": f"127.0.0.1:{gcs_port}", "dashboard": dashboard, "temp_dir": temp_dir,
               "metrics": f"http://127.0.0.1:{metrics_port}/metrics"}
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        kill_processes_using(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_for_dashboard(url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(
                f"{url}/api/version", headers={"Authorization": f"Bearer {os.environ['RAY_AUTH_TOKEN']}"})
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    pytest.fail(f"the Ray dashboard at {url} did not come up in {timeout_s} s")
