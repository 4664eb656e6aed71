"""Several models in one app: route each request to the deployment its ``model`` field names.

Only used with two or more models (one model is its own ingress, one hop from the proxy). The
router is a plain ASGI app behind the same HttpGuard (keys, body size); it merges ``/v1/models``
from every model and answers an unknown ``model`` with OpenAI's 404. Each model replica still
applies its own admission limit (429).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from ultrachat.serving.http_guard import GuardSettings, HttpGuard, send_error

logger = logging.getLogger(__name__)


class ModelRouter:
    """The ASGI app: ``handles`` maps served model name -> that model's deployment handle."""

    def __init__(self, handles: dict[str, DeploymentHandle]):
        self.handles = handles

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if method == "GET" and path == "/v1/models":
            await self._models(send)
        elif method == "GET" and path == "/health":
            try:
                for handle in self.handles.values():
                    await handle.check_health.remote()
            except Exception as err:  # noqa: BLE001 - any failure means unhealthy, said as 503
                await send_error(send, 503, f"A model is not ready: {type(err).__name__}", "ServiceUnavailableError")
                return
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        elif method == "POST":
            await self._forward(scope, receive, send)
        else:
            await send_error(send, 404, f"No route {method} {path}; this server offers /v1/models, "
                             f"/v1/chat/completions, /v1/completions and /health.", "NotFoundError")

    async def _models(self, send) -> None:
        data = []
        for handle in self.handles.values():
            data.extend(await handle.models.remote())
        body = json.dumps({"object": "list", "data": data}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    async def _forward(self, scope: dict, receive, send) -> None:
        message = await receive()  # HttpGuard has read the whole body and replays it in one message
        body = message.get("body", b"")
        try:
            name = json.loads(body).get("model")
        except (ValueError, AttributeError):
            await send_error(send, 400, "The request body is not a JSON object.", "BadRequestError")
            return
        handle = self.handles.get(name) if isinstance(name, str) else None
        if handle is None:
            await send_error(send, 404, f"The model `{name}` does not exist. Available: {sorted(self.handles)}.",
                             "NotFoundError")
            return
        request = {"method": scope["method"], "path": scope["path"],
                   "query": scope.get("query_string", b"").decode(),
                   "headers": [(k.decode(), v.decode()) for k, v in scope["headers"]], "body": body}
        started = False
        try:
            async for event in handle.options(stream=True).forward.remote(request):
                if isinstance(event, dict):
                    headers = [(k.encode(), v.encode()) for k, v in event["headers"]]
                    await send({"type": "http.response.start", "status": event["status"], "headers": headers})
                    started = True
                else:
                    await send({"type": "http.response.body", "body": event, "more_body": True})
        except Exception as err:  # noqa: BLE001 - a lost or overloaded replica: never a 500 with a trace
            logger.warning("forwarding to %s failed: %s", name, type(err).__name__)
            if not started:
                retry = [(b"retry-after", b"1")]
                await send_error(send, 503, f"The model `{name}` is unavailable right now ({type(err).__name__}); "
                                 f"retry shortly.", "ServiceUnavailableError", retry)
                return
        if started:
            await send({"type": "http.response.body", "body": b""})


@serve.ingress()
class Router:
    async def __init__(self, handles: dict[str, DeploymentHandle], guard: dict[str, Any]):
        self._app = HttpGuard(ModelRouter(handles), GuardSettings(**guard))
        logger.info("routing %s", sorted(handles))

    def __serve_build_asgi_app__(self):
        return self._app
