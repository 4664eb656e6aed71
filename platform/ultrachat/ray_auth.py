"""Ray token authentication: on for the private local Ray, and reported for any cluster a job joins.

Ray's dashboard, Jobs API and gRPC services run code for whoever reaches them (CVE-2023-48022); since
Ray 2.52 ``RAY_AUTH_MODE=token`` makes every one of them demand a shared token. Ray 2.60 turns it on
for a new local cluster by itself, but writes the token to ``~/.ray/auth_token`` with the process
umask, i.e. usually readable by every user of the machine, who could then use it against the local
Ray. Here the file is created (or tightened to) 0600 first, so Ray finds it and never writes one.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
import sys
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

MODE_ENV = "RAY_AUTH_MODE"
TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def default_token_path() -> Path:
    """Where Ray looks for the token when neither RAY_AUTH_TOKEN nor RAY_AUTH_TOKEN_PATH is set."""
    return Path(os.environ[TOKEN_PATH_ENV]) if os.environ.get(TOKEN_PATH_ENV) else Path.home() / ".ray" / "auth_token"


def enable_local_token_auth() -> dict:
    """Before a local ``ray.init``: token mode, and a token only this user can read. Returns what was set up.

    An explicit ``RAY_AUTH_MODE`` wins (``disabled`` is logged as a warning); a token given in
    ``RAY_AUTH_TOKEN`` is used as is (nothing is written).
    """
    mode = os.environ.setdefault(MODE_ENV, "token").lower()
    if "ray._raylet" in sys.modules:
        # Ray caches its config at import: re-read it, as Ray's own _enable_token_auth does, or this
        # driver would start a token-mode GCS and then talk to it without the token.
        sys.modules["ray._raylet"].Config.initialize("")
    if mode != "token":
        logger.warning("Ray token auth is off (%s=%s): any local user who can reach this machine's 127.0.0.1 "
                       "ports can run code in the local Ray. Unset %s to turn it back on", MODE_ENV,
                       os.environ[MODE_ENV], MODE_ENV)
        return {"mode": mode}
    if os.environ.get(TOKEN_ENV):
        return {"mode": "token", "token_from": TOKEN_ENV}
    path = default_token_path()
    _ensure_private_token_file(path)
    return {"mode": "token", "token_from": str(path), "token_file_mode": "0600"}


def _ensure_private_token_file(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        loose = stat.S_IMODE(path.stat().st_mode) & 0o077
        if loose:
            try:
                os.chmod(path, 0o600)
            except PermissionError as err:
                raise RuntimeError(f"the Ray token file {path} is readable by other users (mode "
                                   f"{oct(stat.S_IMODE(path.stat().st_mode))}) and not ours to fix. Fix: "
                                   f"chmod 600 {path}, or point {TOKEN_PATH_ENV} at a file of yours") from err
            logger.warning("the Ray token file %s was readable by other users: now 0600", path)
        return
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32))
    logger.info("created the local Ray's auth token in %s (mode 0600)", path)


def cluster_auth_mode(dashboard_url: str | None, timeout_s: float = 10) -> str:
    """The auth mode the cluster's dashboard reports (``token``/``disabled``), or ``unknown`` with why.

    ``/api/authentication_mode`` is public by design (the dashboard asks it before prompting for a token).
    """
    if not dashboard_url:
        return "unknown (no dashboard)"
    url = dashboard_url if "://" in dashboard_url else f"http://{dashboard_url}"
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/api/authentication_mode", timeout=timeout_s) as response:
            return str(json.load(response).get("authentication_mode", "unknown"))
    except (OSError, ValueError) as err:
        return f"unknown ({type(err).__name__}: {err})"


def is_loopback(address: str) -> bool:
    """``address``: host:port, a URL, or a bare host."""
    host = urlsplit(address if "://" in address else f"//{address}").hostname or ""
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def auth_warning(mode: str, gcs_address: str, dashboard_url: str | None) -> str | None:
    """A warning when a cluster reachable beyond loopback runs without token auth."""
    exposed = [a for a in (gcs_address, dashboard_url) if a and not is_loopback(a)]
    if mode != "disabled" or not exposed:
        return None
    return (f"Ray token auth is OFF on the cluster at {', '.join(exposed)}: anyone who reaches its dashboard "
            f"or GCS port can submit jobs, run code and read its secrets. Fix: on KubeRay set spec authOptions "
            f"{{mode: token, secretName: ultrachat-ray-token}} (as cluster.yaml does); elsewhere start every node "
            f"with {MODE_ENV}=token and the same token")
