"""The Serve application builder: our serve config -> Ray Serve deployments.

``build_app`` is what ``serve run``, ``serve deploy`` and a KubeRay RayService import (via
``serve/app.py``); its ``args`` are either ``{config: FILE, overrides: [...]}`` (a serve config like
configs/serve/local.yaml) or the serve keys inline (``models``, ``auth``, ...). One model: its
deployment is the ingress. Several: a router in front sends each request by its ``model``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from ray import serve
from ray.serve import Application

from ultrachat.config.serving import ServedModel, ServeStage
from ultrachat.errors import ConfigError

logger = logging.getLogger(__name__)

APP_NAME = "ultrachat"
# The proxy may pass a replica this many times its own limit; the replica answers the excess with
# an OpenAI-shaped 429 at once instead of Serve queueing it or answering a plain-text 503.
_PROXY_HEADROOM = 2


def build_app(args: dict[str, Any]) -> Application:
    """Application builder for Serve configs: ``import_path: serve.app:build_app``."""
    return build_application(stage_from_args(args))


def stage_from_args(args: dict[str, Any]) -> ServeStage:
    args = dict(args or {})
    if "config" in args:
        from ultrachat.config.loader import load_config

        config_file, overrides = args.pop("config"), args.pop("overrides", [])
        if args:
            raise ConfigError("serve app args", [f"with `config`, only `overrides` may be given; remove {sorted(args)} "
                                                 f"or put them in {config_file}"])
        config = load_config("serve", config_file, list(overrides))
        return ServeStage.model_validate(config.model_dump(include=set(ServeStage.model_fields)))
    from ultrachat.config.loader import validate_section

    return validate_section(ServeStage, args, "serve app args")


def deployment_name(model: ServedModel) -> str:
    return "model-" + re.sub(r"[^A-Za-z0-9_.-]", "-", model.name)


def guard_settings(stage: ServeStage) -> dict[str, Any]:
    return {"keys_env": stage.auth.keys_env, "keys_file": stage.auth.keys_file,
            "public_paths": list(stage.auth.public_paths), "max_request_bytes": stage.max_request_bytes}


def model_deployment_options(model: ServedModel) -> dict[str, Any]:
    scaling = model.autoscaling
    if scaling.min_replicas == scaling.max_replicas:
        replicas: dict[str, Any] = {"num_replicas": scaling.min_replicas}
    else:
        replicas = {"autoscaling_config": {"min_replicas": scaling.min_replicas, "max_replicas": scaling.max_replicas,
                                           "target_ongoing_requests": scaling.target_ongoing_requests}}
    gpus = model.tensor_parallel_size if model.accelerator == "gpu" else 0
    return {
        "name": deployment_name(model),
        **replicas,
        "ray_actor_options": {"num_cpus": model.num_cpus_per_replica, "num_gpus": gpus},
        "max_ongoing_requests": model.max_ongoing_requests * _PROXY_HEADROOM,
        "max_queued_requests": model.max_queued_requests,
        # Engine start (weights, KV cache, compile) takes minutes for large models; health is the engine's.
        "health_check_period_s": 10,
        "health_check_timeout_s": 60,
        "graceful_shutdown_timeout_s": 30,
    }


def build_application(stage: ServeStage) -> Application:
    from ultrachat.serving.model_server import ModelIngress, ModelServer, vllm_server_args
    from ultrachat.serving.router import Router

    guard = guard_settings(stage)
    single = len(stage.models) == 1
    bound = {}
    for model in stage.models:
        if model.engine_kwargs:  # names checked by vLLM's parser here, not first in a failing replica
            vllm_server_args(model, "placeholder", None)
        options = model_deployment_options(model)
        logger.info("deployment %s: %s", options["name"], options)
        server = ModelIngress if single else ModelServer
        bound[model.name] = serve.deployment(server).options(**options).bind(model.model_dump(), guard)
    if single:
        return next(iter(bound.values()))
    capacity = sum(m.max_ongoing_requests * m.autoscaling.max_replicas for m in stage.models)
    router = serve.deployment(Router).options(
        name="router", num_replicas=1, ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=capacity * _PROXY_HEADROOM, max_queued_requests=-1)
    return router.bind(bound, guard)
