"""`ultrachat serve`: deploy the app on the connected Ray, wait until it answers, then hold or detach.

Locally (no RAY_ADDRESS) the job has started a private Ray on 127.0.0.1; Serve's proxy listens on
``host:port``. With ``detach: false`` it serves until Ctrl-C / SIGTERM, then deletes the app and
stops Serve; with ``detach: true`` (a cluster, like ``serve deploy``) it returns once ready.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import httpx

from ultrachat.config.schema import ServeConfig
from ultrachat.config.serving import REMOTE_MODEL_SCHEMES
from ultrachat.models.packaged import LOCAL_PREFIX
from ultrachat.models.source import TINY_PREFIX, resolve_model
from ultrachat.serving.app import APP_NAME, build_application
from ultrachat.serving.http_guard import env_keys, file_keys

logger = logging.getLogger(__name__)


def run_serve(config: ServeConfig) -> dict:
    started = time.monotonic()
    base_url = start_serving(config)
    ready_s = round(time.monotonic() - started, 1)
    logger.info("serving %s at %s (ready in %.0f s)\n%s", [m.name for m in config.models], base_url, ready_s,
                usage_example(base_url, config))
    counts = {"base_url": base_url, "models": [m.name for m in config.models], "ready_s": ready_s}
    if config.detach:
        logger.info("detach: true: the app keeps running on the cluster; stop it with `serve shutdown`")
        return counts
    hold_until_stopped()
    logger.info("stopping: deleting the app and shutting Serve down")
    stop_serving()
    return {**counts, "served_s": round(time.monotonic() - started - ready_s, 1)}


def start_serving(config: ServeConfig) -> str:
    """Deploy the app, wait until every model answers, return the base URL clients use (``.../v1``)."""
    from ray import serve

    started = time.monotonic()
    config = _absolute_local_sources(config)
    serve.start(http_options={"host": config.host, "port": config.port})
    try:
        app = build_application(config)
        logger.info("deploying %s (vLLM engines start now; first start of a model can take minutes)",
                    [m.name for m in config.models])
        serve.run(app, name=APP_NAME, route_prefix="/")
        base_url = f"{_ingress_url(config)}/v1"
        _wait_ready(base_url, config, started)
    except BaseException:  # a failed deploy or Ctrl-C while starting: leave no half-started app behind
        if not config.detach:
            stop_serving()
        raise
    return base_url


def _absolute_local_sources(config: ServeConfig) -> ServeConfig:
    """Replicas do not share the driver's working dir: give them absolute paths. On a local Ray they
    see this machine's files, so a missing model dir is reported now, not by a failed replica."""
    models = []
    for model in config.models:
        source = model.source
        if not source.startswith((*REMOTE_MODEL_SCHEMES, TINY_PREFIX, LOCAL_PREFIX)) and Path(source).expanduser().exists():
            source = str(Path(source).expanduser().resolve())
        elif source.startswith("/") and not os.environ.get("RAY_ADDRESS"):
            resolve_model(source, f"models[{model.name}].source")  # raises with the fix
        models.append(model.model_copy(update={"source": source}))
    return config.model_copy(update={"models": models})


def stop_serving() -> None:
    from ray import serve

    serve.delete(APP_NAME)
    serve.shutdown()


def _ingress_url(config: ServeConfig) -> str:
    """Where clients connect: Serve's proxy, or with direct ingress the ingress replica itself."""
    proxy = f"http://{config.host}:{config.port}"
    if config.ingress == "proxy":
        return proxy
    targets = direct_ingress_targets()
    if not targets:
        logger.warning("ingress: direct, but this Ray cluster runs Serve without direct ingress: set "
                       "RAY_SERVE_ENABLE_DIRECT_INGRESS=1 (or RAY_SERVE_ENABLE_HA_PROXY=1) in its environment. "
                       "Serving through the proxy at %s", proxy)
        return proxy
    if len(targets) > 1:
        logger.info("direct ingress: %d replicas at %s; put a load balancer (HAProxy mode on a cluster) in "
                    "front to use them all through one address", len(targets), targets)
    return targets[0]


def direct_ingress_targets() -> list[str]:
    """``http://ip:port`` of each ingress replica serving HTTP directly (empty without direct ingress)."""
    import ray
    from ray.serve.context import _get_global_client

    controller = _get_global_client()._controller
    groups = ray.get(controller.get_target_groups.remote(APP_NAME))
    proxy_port = ray.get(controller.get_http_config.remote()).port
    return [f"http://{target.ip}:{target.port}" for group in groups if group.protocol == "HTTP"
            for target in group.targets if target.port != proxy_port]


def api_key(config: ServeConfig) -> str | None:
    """A key the app accepts, read the way the replicas read them (None when auth is off)."""
    keys = env_keys(config.auth.keys_env) if config.auth.keys_env else []
    if config.auth.keys_file and os.path.isfile(config.auth.keys_file):
        keys += file_keys(Path(config.auth.keys_file))
    return keys[0] if keys else None


def _wait_ready(base_url: str, config: ServeConfig, started: float) -> None:
    """Every model answers a one-token chat; Serve's own status explains a failed deploy."""
    from ray import serve

    key = api_key(config)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    deadline = started + config.ready_timeout_s
    pending = [m.name for m in config.models]
    last = ""
    while pending:
        status = serve.status().applications.get(APP_NAME)
        if status is not None and status.status == "DEPLOY_FAILED":
            details = {name: d.message for name, d in status.deployments.items() if d.message}
            raise RuntimeError(f"the serve app failed to deploy: {status.message or details}")
        try:
            reply = httpx.post(f"{base_url}/chat/completions", headers=headers, timeout=60, json={
                "model": pending[0], "max_tokens": 1, "messages": [{"role": "user", "content": "ping"}]})
            if reply.status_code == 200:
                pending.pop(0)
                continue
            last = f"HTTP {reply.status_code}: {reply.text[:200]}"
            if reply.status_code == 401:
                raise RuntimeError(f"the app is up but refuses our key ({last}); check auth.keys_env / keys_file")
        except httpx.HTTPError as err:
            last = f"{type(err).__name__}: {err}"
        if time.monotonic() > deadline:
            raise RuntimeError(f"{pending} not ready after {config.ready_timeout_s:.0f} s (last: {last}); raise "
                               f"ready_timeout_s for big models, or see the replica logs in the Ray dashboard")
        time.sleep(2)


def usage_example(base_url: str, config: ServeConfig) -> str:
    model = config.models[0].name
    key_env = config.auth.keys_env or ("API_KEY" if config.auth.enabled else None)
    auth = f' -H "Authorization: Bearer ${key_env}"' if key_env else ""
    api_key = f'os.environ["{key_env}"]' if key_env else '"none"'
    return (f"  curl {base_url}/chat/completions -H 'Content-Type: application/json'{auth} \\\n"
            f"    -d '{{\"model\": \"{model}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello!\"}}]}}'\n"
            f"  python -c 'import os, openai; c = openai.OpenAI(base_url=\"{base_url}\", api_key={api_key}); "
            f"print(c.chat.completions.create(model=\"{model}\", messages=[{{\"role\": \"user\", "
            f"\"content\": \"Hello!\"}}]).choices[0].message.content)'\n"
            f"  Ctrl-C stops the server.")


def hold_until_stopped() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1):
        pass
