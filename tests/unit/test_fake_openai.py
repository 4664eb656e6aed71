"""The fake OpenAI server, through the real `openai` client over real sockets on 127.0.0.1."""

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import openai
import pytest

from ultrachat.devtools.fake_openai import FakeBehavior, FakeOpenAIServer

HELLO = [{"role": "user", "content": "hello there, how are you"}]


@pytest.fixture
def server():
    with FakeOpenAIServer(FakeBehavior()) as srv:
        yield srv


def client(srv, key="any"):
    return openai.OpenAI(base_url=srv.base_url, api_key=key, max_retries=0, timeout=5)


def chat(srv, messages=HELLO, **kwargs):
    return client(srv).chat.completions.create(model="fake", messages=messages, **kwargs)


def test_models_and_completion_shape(server):
    assert [m.id for m in client(server).models.list().data] == ["fake-model"]
    reply = chat(server)
    assert reply.object == "chat.completion" and reply.model == "fake"
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content and choice.finish_reason == "stop"
    assert reply.usage.prompt_tokens == 5  # words of all message contents
    assert reply.usage.completion_tokens == len(choice.message.content.split())
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert server.base_url.startswith("http://127.0.0.1:") and server.base_url.endswith("/v1")


def test_random_replies_are_deterministic_per_conversation(server):
    first, again = chat(server), chat(server)
    other = chat(server, messages=[{"role": "user", "content": "something else"}])
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.choices[0].message.content != other.choices[0].message.content


def test_scripted_replies_round_robin_and_length_cut(server):
    server.behavior.replies = ["one two three four", "five"]
    texts = [chat(server).choices[0].message.content for _ in range(3)]
    assert texts == ["one two three four", "five", "one two three four"]
    assert chat(server, max_tokens=2).choices[0].finish_reason == "stop"  # "five" fits
    cut = chat(server, max_tokens=2)
    assert cut.choices[0].message.content == "one two" and cut.choices[0].finish_reason == "length"
    assert cut.usage.completion_tokens == 2


def test_latency(server):
    server.behavior.latency_s = 0.3
    start = time.monotonic()
    chat(server)
    assert time.monotonic() - start >= 0.3


def test_scripted_faults_in_order_and_counted(server):
    server.behavior.retry_after_s = 0.2
    server.add_faults("429", "500", "503", "400")
    with pytest.raises(openai.RateLimitError) as err:
        chat(server)
    assert err.value.response.headers["retry-after"] == "0.2"
    with pytest.raises(openai.InternalServerError) as err:
        chat(server)
    assert err.value.status_code == 500
    with pytest.raises(openai.InternalServerError) as err:
        chat(server)
    assert err.value.status_code == 503
    with pytest.raises(openai.BadRequestError):
        chat(server)
    assert chat(server).choices[0].message.content  # faults consumed: back to normal
    assert server.stats.total == 5 and server.stats.ok == 1
    assert dict(server.stats.faults) == {"429": 1, "500": 1, "503": 1, "400": 1}


def test_malformed_empty_and_timeout(server):
    server.add_faults("malformed", "empty", "timeout")
    with pytest.raises(json.JSONDecodeError):
        chat(server)
    empty = chat(server)
    assert empty.choices[0].message.content == "" and empty.usage.completion_tokens == 0
    start = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        chat(server, timeout=0.3)
    assert time.monotonic() - start < 2
    time.sleep(0.1)  # the server notices the disconnect and ends the hanging handler
    assert server.stats.in_flight == 0


def test_random_faults_are_seeded():
    def run():
        with FakeOpenAIServer(FakeBehavior(fault_rate=0.5, seed=7, random_fault_kinds=("500", "503"))) as srv:
            outcome = []
            for _ in range(12):
                try:
                    chat(srv)
                    outcome.append("ok")
                except openai.InternalServerError as err:
                    outcome.append(err.status_code)
            return outcome, srv.stats
    first, stats = run()
    again, _ = run()
    assert first == again and "ok" in first and {500, 503} & set(first)
    assert sum(stats.faults.values()) == len([o for o in first if o != "ok"])


def test_api_key_required():
    with FakeOpenAIServer(FakeBehavior(required_api_key="sekrit")) as srv:
        with pytest.raises(openai.AuthenticationError) as err:
            client(srv, key="wrong").chat.completions.create(model="fake", messages=HELLO)
        assert err.value.body["type"] == "invalid_request_error" and err.value.body["code"] == "invalid_api_key"
        assert client(srv, key="sekrit").chat.completions.create(model="fake", messages=HELLO).choices
        assert srv.stats.unauthorized == 1


def test_records_last_request_bodies_and_rejects_bad_ones():
    with FakeOpenAIServer(FakeBehavior(record_last=2)) as srv:
        for n in range(3):
            chat(srv, messages=[{"role": "user", "content": f"message {n}"}], temperature=0.5)
        assert [b["messages"][0]["content"] for b in srv.stats.bodies] == ["message 1", "message 2"]
        assert srv.stats.bodies[-1]["temperature"] == 0.5
        request = urllib.request.Request(srv.base_url + "/chat/completions", data=b"not json", method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=5)
        assert err.value.code == 400 and "messages" in json.loads(err.value.read())["error"]["message"]


def test_clean_shutdown_even_with_a_hanging_request():
    before = threading.active_count()
    srv = FakeOpenAIServer(FakeBehavior(faults=["timeout"])).start()
    port = srv.port
    hung = threading.Thread(target=lambda: pytest.raises(Exception, chat, srv, timeout=30))
    hung.start()
    time.sleep(0.2)
    start = time.monotonic()
    srv.stop()
    hung.join(timeout=5)
    assert time.monotonic() - start < 3 and not hung.is_alive()
    assert threading.active_count() == before
    with socket.socket() as probe:  # the port is released
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    with pytest.raises(RuntimeError, match="not running"):
        srv.base_url


def test_cli_serves_until_terminated():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "ultrachat.devtools.fake_openai", "--port", str(port),
                             "--latency", "0.01", "--reply", "from the cli"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        cli = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=5)
        deadline = time.monotonic() + 15
        while True:
            try:
                reply = cli.chat.completions.create(model="fake", messages=HELLO)
                break
            except openai.APIConnectionError:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
                time.sleep(0.1)
        assert reply.choices[0].message.content == "from the cli"
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr
    assert "stopping after 1 requests" in stderr
