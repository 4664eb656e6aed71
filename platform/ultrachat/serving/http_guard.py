"""ASGI middleware in front of vLLM's OpenAI app: API keys, body size, admission, OpenAI-shaped errors.

It reads each request body once (bounded by ``max_request_bytes``) and replays it to the app, so
nothing downstream sees a body larger than allowed. Overload is answered here with 429 and a
Retry-After before the engine queues work it cannot start soon. Keys are compared in constant time
(``hmac.compare_digest`` against every key) and never logged.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

logger = logging.getLogger(__name__)

ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]
# Work that occupies the engine; everything else (models, health, metrics) is never refused.
_ENGINE_PATHS = ("/v1/chat/completions", "/v1/completions")
_KEYS_FILE_RECHECK_S = 5.0


def error_body(status: int, message: str, err_type: str, param: str | None = None) -> bytes:
    """OpenAI's error object, as vLLM's own handlers shape it (``code`` is the HTTP status)."""
    return json.dumps({"error": {"message": message, "type": err_type, "param": param, "code": status}}).encode()


async def send_error(send: Callable, status: int, message: str, err_type: str,
                     headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = error_body(status, message, err_type)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


@dataclass
class GuardSettings:
    keys_env: str | None = None
    keys_file: str | None = None
    public_paths: list[str] = field(default_factory=lambda: ["/health"])
    max_request_bytes: int = 2 * 2**20
    max_ongoing_requests: int | None = None  # None: no admission limit here

    @property
    def auth_enabled(self) -> bool:
        return bool(self.keys_env or self.keys_file)


def env_keys(name: str) -> list[str]:
    """The keys in environment variable ``name``: one, or several separated by commas."""
    return [key.strip() for key in os.environ.get(name, "").split(",") if key.strip()]


def file_keys(path: Path) -> list[str]:
    """The keys in a keys file: one per line; blank lines and # comments ignored."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


class ApiKeys:
    """The accepted keys: from an env var (comma-separated) and a file (one per line, re-read on change)."""

    def __init__(self, keys_env: str | None, keys_file: str | None):
        self._env_keys = [key.encode() for key in env_keys(keys_env)] if keys_env else []
        self._file = Path(keys_file) if keys_file else None
        self._file_keys: list[bytes] = []
        self._file_stamp: float | None = None
        self._checked_at = 0.0
        if keys_env and not self._env_keys:
            logger.warning("auth.keys_env names %s, which is unset or empty in this replica", keys_env)
        self._reload_file()
        if not self._env_keys and not self._file_keys:
            # Refusing every request is safer than serving without the keys the config asked for.
            logger.error("API-key auth is on but no key was found (auth.keys_env / auth.keys_file): every "
                         "request will get 401 until a key is provided")

    def _reload_file(self) -> None:
        if self._file is None:
            return
        try:
            stamp = self._file.stat().st_mtime
        except FileNotFoundError:
            if self._file_stamp is not None or not self._checked_at:
                logger.warning("auth.keys_file %s does not exist (yet)", self._file)
            self._file_keys, self._file_stamp = [], None
            return
        if stamp != self._file_stamp:
            self._file_keys = [key.encode() for key in file_keys(self._file)]
            self._file_stamp = stamp
            logger.info("loaded %d API key(s) from %s", len(self._file_keys), self._file)

    def accepts(self, presented: bytes) -> bool:
        now = time.monotonic()
        if self._file is not None and now - self._checked_at > _KEYS_FILE_RECHECK_S:
            self._checked_at = now
            self._reload_file()
        matched = False
        for key in (*self._env_keys, *self._file_keys):  # no early exit: time does not depend on which key
            matched |= hmac.compare_digest(presented, key)
        return matched


def _presented_key(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].strip()
        if name == b"x-api-key":
            return value.strip()
    return None


class HttpGuard:
    """Wraps an ASGI app; everything it refuses gets an OpenAI-shaped JSON error."""

    def __init__(self, app: ASGIApp, settings: GuardSettings):
        self.app = app
        self.settings = settings
        self.keys = ApiKeys(settings.keys_env, settings.keys_file) if settings.auth_enabled else None
        self.ongoing = 0

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if self.keys is not None and path not in self.settings.public_paths:
            presented = _presented_key(scope["headers"])
            if presented is None or not self.keys.accepts(presented):
                await send_error(send, 401, "Invalid or missing API key: send it as `Authorization: Bearer "
                                 "<key>`.", "AuthenticationError", [(b"www-authenticate", b"Bearer")])
                return
        engine_work = scope["method"] == "POST" and path.startswith(_ENGINE_PATHS)
        limit = self.settings.max_ongoing_requests
        if engine_work and limit is not None and self.ongoing >= limit:
            await send_error(send, 429, f"The server is at capacity ({limit} requests in progress on this "
                             f"replica); retry after a moment.", "RateLimitError", [(b"retry-after", b"1")])
            return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        body = await self._read_body(scope, receive, send)
        if body is None:
            return
        self.ongoing += engine_work
        try:
            await self.app(scope, _replay(body, receive), send)
        finally:
            self.ongoing -= engine_work

    async def _read_body(self, scope: dict, receive: Callable, send: Callable) -> bytes | None:
        limit = self.settings.max_request_bytes
        too_large = f"The request body exceeds the {limit}-byte limit (max_request_bytes)."
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await send_error(send, 413, too_large, "RequestEntityTooLarge")
                return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await send_error(send, 413, too_large, "RequestEntityTooLarge")
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Callable) -> Callable:
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the client's disconnect, as uvicorn does

    return replay
