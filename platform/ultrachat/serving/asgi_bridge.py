"""Carry an HTTP request across a Serve handle call: a plain dict in, response events out.

The router (several models) cannot hand its ASGI connection to another replica, so it sends the
request as a dict and streams back what the model's ASGI app sends: first ``{"status", "headers"}``,
then body chunks as bytes. Closing the stream early (the client went away) cancels the app, which
aborts the engine request.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable

_DONE = object()


def http_scope(request: dict[str, Any]) -> dict:
    headers = [(name.encode().lower(), value.encode()) for name, value in request.get("headers", [])]
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": request["method"],
            "scheme": "http", "path": request["path"], "raw_path": request["path"].encode(),
            "root_path": "", "query_string": request.get("query", "").encode(), "headers": headers,
            "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 0)}


async def call_asgi(app: Callable, request: dict[str, Any]) -> AsyncIterator[dict | bytes]:
    queue: asyncio.Queue = asyncio.Queue()
    body_sent = asyncio.Event()
    finished = asyncio.Event()

    async def receive() -> dict:
        if not body_sent.is_set():
            body_sent.set()
            return {"type": "http.request", "body": request.get("body", b""), "more_body": False}
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            headers = [(k.decode(), v.decode()) for k, v in message.get("headers", [])]
            await queue.put({"status": message["status"], "headers": headers})
        elif message["type"] == "http.response.body" and message.get("body"):
            await queue.put(bytes(message["body"]))

    async def run() -> None:
        try:
            await app(http_scope(request), receive, send)
        finally:
            await queue.put(_DONE)

    task = asyncio.create_task(run())
    try:
        while (event := await queue.get()) is not _DONE:
            yield event
        await task  # re-raise what the app raised
    finally:
        finished.set()
        if not task.done():
            task.cancel()
