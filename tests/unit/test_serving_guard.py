"""HttpGuard in front of a small ASGI app, over real HTTP semantics (httpx's ASGI transport): keys,
public paths, body limits, admission (429) and body rewriting, each answered in OpenAI's error shape."""

import asyncio
import json

import httpx
import pytest

from ultrachat.serving.asgi_bridge import call_asgi
from ultrachat.serving.http_guard import ApiKeys, GuardSettings, HttpGuard


class EchoApp:
    """Answers with the body it received; ``hold`` keeps requests in progress until released."""

    def __init__(self):
        self.hold = asyncio.Event()
        self.hold.set()
        self.seen: list[bytes] = []

    async def __call__(self, scope, receive, send):
        body = b""
        if scope["method"] == "POST":
            message = await receive()
            body = message.get("body", b"")
            self.seen.append(body)
            await self.hold.wait()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps({"echo": body.decode()}).encode()})


def client_for(guard: HttpGuard) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://test")


def assert_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == status and error["message"] and error["type"]
    return error


def test_keys_from_env_and_file_public_paths_and_header_forms(tmp_path, monkeypatch):
    monkeypatch.setenv("UC_KEYS", "alpha, beta")
    keys_file = tmp_path / "keys"
    keys_file.write_text("# comment\n\ngamma\n")
    guard = HttpGuard(EchoApp(), GuardSettings(keys_env="UC_KEYS", keys_file=str(keys_file),
                                               public_paths=["/health"]))

    async def go():
        async with client_for(guard) as client:
            assert (await client.get("/health")).status_code == 200
            assert_error(await client.get("/v1/models"), 401)
            assert_error(await client.get("/v1/models", headers={"Authorization": "Bearer nope"}), 401)
            assert_error(await client.get("/v1/models", headers={"Authorization": "Basic alpha"}), 401)
            for key in ("alpha", "beta", "gamma"):
                assert (await client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})).status_code == 200
            assert (await client.get("/v1/models", headers={"x-api-key": "beta"})).status_code == 200
            response = await client.get("/v1/models")
            assert response.headers["www-authenticate"] == "Bearer"

    asyncio.run(go())


def test_keys_file_edits_are_picked_up(tmp_path, monkeypatch):
    keys_file = tmp_path / "keys"
    keys_file.write_text("old\n")
    keys = ApiKeys(None, str(keys_file))
    assert keys.accepts(b"old") and not keys.accepts(b"new")
    keys_file.write_text("new\n")
    import os
    os.utime(keys_file, (1, 1))  # a different mtime even within the same clock tick
    monkeypatch.setattr("ultrachat.serving.http_guard._KEYS_FILE_RECHECK_S", 0.0)
    assert keys.accepts(b"new") and not keys.accepts(b"old")


def test_auth_on_without_any_key_refuses_everything(monkeypatch, caplog):
    monkeypatch.delenv("UC_EMPTY", raising=False)
    keys = ApiKeys("UC_EMPTY", None)
    assert not keys.accepts(b"") and not keys.accepts(b"anything")
    assert "every request will get 401" in caplog.text


def test_body_limit_by_header_and_by_stream():
    guard = HttpGuard(EchoApp(), GuardSettings(max_request_bytes=2048))

    async def go():
        async with client_for(guard) as client:
            assert (await client.post("/v1/chat/completions", content=b"x" * 2048)).status_code == 200
            error = assert_error(await client.post("/v1/chat/completions", content=b"x" * 2049), 413)
            assert "max_request_bytes" in error["message"]

            async def chunks():  # no content-length: counted while reading
                for _ in range(3):
                    yield b"y" * 1000

            assert_error(await client.post("/v1/chat/completions", content=chunks()), 413)

    asyncio.run(go())


def test_admission_limit_answers_429_and_frees_slots():
    app = EchoApp()
    guard = HttpGuard(app, GuardSettings(max_ongoing_requests=2))

    async def go():
        app.hold.clear()
        async with client_for(guard) as client:
            busy = [asyncio.create_task(client.post("/v1/chat/completions", content=b"{}")) for _ in range(2)]
            while guard.ongoing < 2:
                await asyncio.sleep(0.01)
            refused = await client.post("/v1/completions", content=b"{}")
            error = assert_error(refused, 429)
            assert refused.headers["retry-after"] == "1" and "capacity" in error["message"]
            # Listing models and health never count against the engine's capacity.
            assert (await client.get("/v1/models")).status_code == 200
            app.hold.set()
            assert [r.status_code for r in await asyncio.gather(*busy)] == [200, 200]
            assert guard.ongoing == 0
            assert (await client.post("/v1/chat/completions", content=b"{}")).status_code == 200

    asyncio.run(go())


def test_call_asgi_streams_start_then_body_and_cancels_on_close():
    async def streaming_app(scope, receive, send):
        assert (await receive())["body"] == b"ping"
        await send({"type": "http.response.start", "status": 201, "headers": [(b"x-a", b"1")]})
        for part in (b"one", b"two"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def go():
        events = [e async for e in call_asgi(streaming_app, {"method": "POST", "path": "/x", "body": b"ping"})]
        assert events == [{"status": 201, "headers": [("x-a", "1")]}, b"one", b"two"]
        cancelled = asyncio.Event()

        async def endless(scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            try:
                while True:
                    await send({"type": "http.response.body", "body": b".", "more_body": True})
                    await asyncio.sleep(0)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        stream = call_asgi(endless, {"method": "GET", "path": "/"})
        await stream.__anext__()
        await stream.__anext__()
        await stream.aclose()  # the router's client went away
        await asyncio.wait_for(cancelled.wait(), 5)

    asyncio.run(go())


@pytest.mark.parametrize("header", [b"Bearer alpha", b"bearer alpha", b"BEARER   alpha"])
def test_bearer_scheme_is_case_insensitive(header, monkeypatch):
    from ultrachat.serving.http_guard import _presented_key

    assert _presented_key([(b"authorization", header)]) == b"alpha"
