"""Connect a job to Ray exactly once.

- ``RAY_ADDRESS`` set (``ray job submit``, a KubeRay head, a test's head): connect to that cluster.
  When our package was imported from a source tree (the job's working_dir) rather than an installed
  copy, it is shipped to the workers with ``py_modules`` so every process runs the same code.
- Otherwise: start a private local Ray bound to 127.0.0.1 with usage stats off and token auth on
  (a token file only its owner can read: ``ray_auth``).
Either way the description names the cluster's auth mode, with a warning when a cluster reachable
beyond loopback runs without it. Job metadata and the namespace make runs recognisable in the dashboard.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import ultrachat
from ultrachat.config.schema import RaySettings
from ultrachat.local_env import apply_local_env_defaults
from ultrachat.ray_auth import auth_warning, cluster_auth_mode, enable_local_token_auth

logger = logging.getLogger(__name__)

LOCALHOST = "127.0.0.1"


def init_ray(settings: RaySettings, job: str, run_name: str | None = None,
             local_env: dict[str, str] | None = None) -> dict:
    """Initialise Ray for ``job`` unless already initialised; return a short description.

    ``local_env`` is set (unless already exported) before a local Ray starts, so its raylet and
    every worker see it; it has no effect on a cluster, whose environment is the pod spec's.
    """
    address = os.environ.get("RAY_ADDRESS")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    local_auth = None
    if not address:
        apply_local_env_defaults()  # before `import ray`, which reads some of them
        local_auth = enable_local_token_auth()
        if settings.local_worker_niceness is not None:
            # Read by the raylet this process starts; setdefault so an exported value wins.
            os.environ.setdefault("RAY_worker_niceness", str(settings.local_worker_niceness))
        for key, value in (local_env or {}).items():
            os.environ.setdefault(key, value)
    import ray
    import ray.data

    ray.data.DataContext.get_current().use_datasource_v2 = settings.parquet_reader == "v2"
    if ray.is_initialized():
        logger.info("Ray already initialised in this process; reusing it")
        return _describe(ray, local_auth)
    metadata = {"ultrachat_job": job, "ultrachat_run": run_name or job}
    job_config = ray.job_config.JobConfig(metadata=metadata)
    if address:
        runtime_env = _ship_package_env()
        logger.info("connecting to the Ray cluster at %s (namespace %s)", address, settings.namespace)
        try:
            ray.init(address=address, namespace=settings.namespace, job_config=job_config,
                     runtime_env=runtime_env, log_to_driver=settings.log_to_driver)
        except ray.exceptions.AuthenticationError as err:
            raise RuntimeError(
                f"the Ray cluster at {address} refused this job's token ({err}). Fix: export RAY_AUTH_MODE=token "
                f"and RAY_AUTH_TOKEN=<the cluster's token> (KubeRay: kubectl get secret ultrachat-ray-token -o "
                f"jsonpath='{{.data.auth_token}}' | base64 -d), or submit with `ray job submit`, whose driver "
                f"inherits it") from err
    else:
        memory = settings.local_object_store_memory_gb
        logger.info("starting a local Ray on %s (set RAY_ADDRESS to use a cluster)", LOCALHOST)
        ray.init(
            # "local": always a new private Ray, never one a `ray start` left running on this machine.
            address="local",
            _node_ip_address=LOCALHOST,
            num_cpus=settings.local_num_cpus,
            object_store_memory=int(memory * 2**30) if memory else None,
            include_dashboard=settings.local_dashboard,
            dashboard_host=LOCALHOST,
            namespace=settings.namespace,
            job_config=job_config,
            log_to_driver=settings.log_to_driver,
        )
    if not settings.data_progress:
        # Without a TTY, Ray Data's progress is INFO lines of this logger.
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    info = _describe(ray, local_auth)
    logger.info("Ray ready: %s", info)
    if info.get("auth_warning"):
        logger.warning("%s", info["auth_warning"])
    if not settings.log_to_driver:
        logger.info("worker, engine and Ray Serve output goes to %s (ray.log_to_driver=true shows it here)",
                    _logs_dir(ray))
    return info


def _logs_dir(ray) -> str:
    node = getattr(ray._private.worker, "_global_node", None)  # the local node; a cluster's is on its head
    return node.get_logs_dir_path() if node is not None else "the Ray session's logs dir (see the dashboard)"


def _describe(ray, local_auth: dict | None) -> dict:
    resources = ray.cluster_resources()
    gcs_address = ray.get_runtime_context().gcs_address
    try:
        dashboard = ray._private.worker.get_dashboard_url() or None
    except Exception:  # noqa: BLE001  (no dashboard, or not yet known: the mode is then probed no further)
        dashboard = None
    mode = local_auth["mode"] if local_auth else cluster_auth_mode(dashboard)
    info = {
        "address": gcs_address,
        "namespace": ray.get_runtime_context().namespace,
        "cpus": resources.get("CPU", 0),
        "gpus": resources.get("GPU", 0),
        "auth": mode,
    }
    warning = auth_warning(mode, gcs_address, dashboard)
    if warning:
        info["auth_warning"] = warning
    return info


def _ship_package_env() -> dict | None:
    """``py_modules`` for our package when it runs from a source tree, not an installed copy."""
    package_dir = Path(ultrachat.__file__).resolve().parent
    installed = any(part in ("site-packages", "dist-packages") for part in package_dir.parts)
    if installed or _job_runtime_env_has("py_modules"):
        return None
    logger.info("shipping %s to the workers (py_modules), so they run this working dir's code", package_dir)
    return {"py_modules": [str(package_dir)]}


def _job_runtime_env_has(key: str) -> bool:
    # A submitted job's own runtime_env arrives in RAY_JOB_CONFIG_JSON_ENV_VAR; Ray refuses to merge
    # a driver runtime_env that sets the same field, so defer to what the user submitted.
    import json

    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return False
    return key in (json.loads(raw).get("runtime_env") or {})


def shutdown_ray() -> None:
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()
