"""Stop what a test started: Ray's shutdown can leave agents behind, so match them by their temp dir."""

import psutil


def kill_processes_using(marker: str) -> None:
    """Kill every process whose command line names ``marker`` (a temp dir only that test's Ray uses)."""
    for proc in psutil.process_iter(["cmdline"]):
        if marker in " ".join(proc.info["cmdline"] or []):
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
