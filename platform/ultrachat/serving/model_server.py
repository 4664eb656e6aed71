"""One model's Ray Serve deployment: a vLLM engine and vLLM's own OpenAI app, in the replica process.

A request goes proxy -> this replica -> vLLM's FastAPI app (protocol models, chat/completions
handlers, error handlers: vLLM's code, not a copy) -> the engine in the same event loop. That is one
hop fewer than ``ray.serve.llm`` (proxy -> OpenAiIngress -> LLMServer) and no stream-chunk batching;
docs/benchmarks.md has what that is worth. The app is built after the engine starts, which is why
the ingress is late-bound (``__serve_build_asgi_app__``).
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import json
import logging
from typing import Any, AsyncIterator

from ray import serve

from ultrachat.config.serving import ServedModel
from ultrachat.llm.vllm_cpu import cpu_engine_kwargs
from ultrachat.serving.asgi_bridge import call_asgi
from ultrachat.serving.http_guard import GuardSettings, HttpGuard
from ultrachat.models.files import chat_template_for, local_model_dir

logger = logging.getLogger(__name__)


def vllm_server_args(model: ServedModel, model_dir: str, chat_template: str | None):
    """vLLM's own `vllm serve` argument namespace, so its app and engine read what they expect."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    argv = ["--model", model_dir, "--served-model-name", model.name, "--dtype", model.dtype,
            "--max-model-len", str(model.max_model_len), "--tensor-parallel-size", str(model.tensor_parallel_size),
            "--disable-uvicorn-access-log", "--disable-fastapi-docs"]
    args = make_arg_parser(FlexibleArgumentParser()).parse_args(argv)
    unknown = sorted(key for key in model.engine_kwargs if not hasattr(args, key))
    if unknown:
        hints = [f"{key!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(key, vars(args), n=1))
                 else repr(key) for key in unknown]
        raise ValueError(f"models[{model.name}].engine_kwargs: {', '.join(hints)}: not vLLM engine/server arguments "
                         f"(use the AsyncEngineArgs names, e.g. gpu_memory_utilization, enable_prefix_caching)")
    for key, value in cpu_engine_kwargs(model.engine_kwargs, f"models[{model.name}].engine_kwargs").items():
        setattr(args, key, value)
    args.chat_template = chat_template
    validate_parsed_serve_args(args)
    return args


class ModelServer:
    """Replica of one served model; Serve options (resources, autoscaling) are set by serving/app.py.

    Behind the router (several models) it is called through its handle (``forward``, ``models``);
    as ``ModelIngress`` (one model) it also serves HTTP itself.
    """

    async def __init__(self, model: dict[str, Any], guard: dict[str, Any]):
        from vllm.entrypoints.launchers.api_server.app_state import init_app_state
        from vllm.entrypoints.launchers.api_server.entry import build_async_engine_client_from_engine_args
        from vllm.entrypoints.launchers.app import build_app
        from vllm.engine.arg_utils import AsyncEngineArgs

        self.model = ServedModel.model_validate(model)
        key = f"models[{self.model.name}]"
        model_dir = local_model_dir(self.model.source, f"{key}.source")
        template = chat_template_for(model_dir, self.model.chat_template, f"{key}.chat_template")
        args = vllm_server_args(self.model, model_dir, template)
        logger.info("starting vLLM for %s from %s (dtype %s, max_model_len %d, tp %d)", self.model.name,
                    model_dir, self.model.dtype, self.model.max_model_len, self.model.tensor_parallel_size)
        self._stack = contextlib.AsyncExitStack()
        self.engine = await self._stack.enter_async_context(
            build_async_engine_client_from_engine_args(AsyncEngineArgs.from_cli_args(args)))
        tasks = await self.engine.get_supported_tasks()
        vllm_app = build_app(args, tasks, self.engine.model_config)
        await init_app_state(self.engine, vllm_app.state, args, tasks)
        settings = GuardSettings(**guard, max_ongoing_requests=self.model.max_ongoing_requests)
        # Behind the router (several models) the router checks keys and sizes; this replica still
        # refuses work beyond its own capacity.
        internal = GuardSettings(max_request_bytes=settings.max_request_bytes,
                                 max_ongoing_requests=self.model.max_ongoing_requests)
        self._internal = HttpGuard(vllm_app, internal)
        self._http = HttpGuard(vllm_app, settings)
        logger.info("%s ready", self.model.name)

    def __serve_build_asgi_app__(self):
        return self._http

    async def forward(self, request: dict[str, Any]) -> AsyncIterator[dict | bytes]:
        """The router's path in: an HTTP request as a dict, the response as a start dict then bytes."""
        async for event in call_asgi(self._internal, request):
            yield event

    async def models(self) -> list[dict]:
        """This model's entries of vLLM's /v1/models, for the router's merged list."""
        body = b"".join([event async for event in call_asgi(self._internal, {"method": "GET", "path": "/v1/models"})
                         if isinstance(event, bytes)])
        return json.loads(body)["data"]

    async def check_health(self) -> None:
        # Serve restarts the replica when this raises (e.g. the engine process died).
        await self.engine.check_health()

    async def __del__(self):
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._stack.aclose(), timeout=30)


# Serve allows one ASGI ingress per application: with one model it is the model itself.
ModelIngress = serve.ingress()(ModelServer)
