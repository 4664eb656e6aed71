"""Several models in one app, deployed like a RayService does it: `serve deploy` of a Serve config whose
import path is our builder, onto the session's Ray head. One model is the train job's export (given
as a file:// URI, so the replica copies it first), one the base tiny model with the UltraChat
template; requests are routed by `model` through Serve's proxy."""

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from transformers import AutoTokenizer

from ports import free_port
from ultrachat.models.chat_template import ULTRACHAT_CHAT_TEMPLATE

EXPORT_MODEL, BASE_MODEL = "ultrallama-export", "tiny-base"
MESSAGES = [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "Name a river."}]


def _serve_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    serve_bin = str(Path(sys.executable).with_name("serve"))
    return subprocess.run([serve_bin, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def deployed(ray_head, trained, small_model_dir, tmp_path_factory):
    port = free_port()
    export = trained["out"] / "export"
    models = [
        {"name": EXPORT_MODEL, "source": export.as_uri(), "dtype": "float32", "max_model_len": 512,
         "num_cpus_per_replica": 0.5},
        {"name": BASE_MODEL, "source": "tiny:small", "chat_template": "ultrachat", "dtype": "float32",
         "max_model_len": 512, "num_cpus_per_replica": 0.5},
    ]
    config = {"proxy_location": "HeadOnly", "http_options": {"host": "127.0.0.1", "port": port},
              "applications": [{"name": "ultrachat", "route_prefix": "/",
                                "import_path": "ultrachat.serving.app:build_app", "args": {"models": models}}]}
    path = tmp_path_factory.mktemp("serve-deploy") / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    done = _serve_cli("deploy", str(path), "--address", ray_head["dashboard"])
    assert done.returncode == 0, done.stderr[-3000:]
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_for_models(base_url, {EXPORT_MODEL, BASE_MODEL}, ray_head["dashboard"])
        yield {"base_url": base_url, "export": export}
    finally:
        _serve_cli("shutdown", "-y", "--address", ray_head["dashboard"])


def _wait_for_models(base_url: str, names: set[str], dashboard: str, timeout_s: float = 480) -> None:
    deadline = time.monotonic() + timeout_s
    last, attempts = "", 0
    while time.monotonic() < deadline:
        attempts += 1
        if attempts % 10 == 0 and "DEPLOY_FAILED" in (status := _serve_cli("status", "--address", dashboard).stdout):
            pytest.fail(f"the app failed to deploy:\n{status[-4000:]}")
        try:
            reply = httpx.get(f"{base_url}/models", timeout=10)
            if reply.status_code == 200 and {m["id"] for m in reply.json()["data"]} == names:
                return
            last = f"{reply.status_code} {reply.text[:200]}"
        except httpx.HTTPError as err:
            last = repr(err)
        time.sleep(3)
    status = _serve_cli("status", "--address", dashboard).stdout
    pytest.fail(f"models not served after {timeout_s} s (last: {last})\n{status[-4000:]}")


@pytest.fixture(scope="module")
def client(deployed):
    return openai.OpenAI(base_url=deployed["base_url"], api_key="none", max_retries=0, timeout=120)


def test_models_lists_every_model(client):
    assert sorted(m.id for m in client.models.list().data) == sorted([EXPORT_MODEL, BASE_MODEL])


def test_requests_are_routed_by_model(client):
    # The train job's export generates text on vLLM (its transformers load: test_training).
    greedy = client.chat.completions.create(model=EXPORT_MODEL, messages=MESSAGES, max_tokens=24, temperature=0)
    assert greedy.choices[0].message.content.strip() and greedy.usage.completion_tokens >= 4
    for name in (EXPORT_MODEL, BASE_MODEL):
        reply = client.chat.completions.create(model=name, messages=MESSAGES, max_tokens=4)
        assert reply.model == name and reply.choices[0].message.content is not None
        text = client.completions.create(model=name, prompt="Rivers", max_tokens=3)
        assert text.model == name and text.usage.completion_tokens >= 1


def test_each_model_renders_its_own_chat_template(deployed, client, small_model_dir):
    """The export's saved training template, and the UltraChat format forced on the base model."""
    export_tok = AutoTokenizer.from_pretrained(deployed["export"])
    expected = len(export_tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True,
                                                  return_dict=False))
    got = client.chat.completions.create(model=EXPORT_MODEL, messages=MESSAGES, max_tokens=1).usage.prompt_tokens
    assert got == expected
    base_tok = AutoTokenizer.from_pretrained(small_model_dir)
    expected = len(base_tok.apply_chat_template(MESSAGES, chat_template=ULTRACHAT_CHAT_TEMPLATE,
                                                add_generation_prompt=True, tokenize=True, return_dict=False))
    got = client.chat.completions.create(model=BASE_MODEL, messages=MESSAGES, max_tokens=1).usage.prompt_tokens
    assert got == expected


def test_streaming_through_the_router(deployed):
    body = {"model": EXPORT_MODEL, "messages": MESSAGES, "max_tokens": 5, "stream": True,
            "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{deployed['base_url']}/chat/completions", json=body, timeout=60) as raw:
        assert raw.status_code == 200
        events = [line for line in raw.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    usage = json.loads(events[-2].removeprefix("data: "))["usage"]
    assert 1 <= usage["completion_tokens"] <= 5


def test_router_errors_keep_the_openai_shape(deployed):
    for body, status in [({"model": "missing", "messages": MESSAGES}, 404),
                         ({"model": BASE_MODEL}, 400),
                         ("not json", 400)]:
        content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        reply = httpx.post(f"{deployed['base_url']}/chat/completions", content=content, timeout=60,
                           headers={"Content-Type": "application/json"})
        assert reply.status_code == status, reply.text[:300]
        assert reply.json()["error"]["code"] == status
    assert httpx.get(deployed["base_url"].removesuffix("/v1") + "/health", timeout=60).status_code == 200
