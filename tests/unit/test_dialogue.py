"""The UltraChat simulation loop against the fake OpenAI-compatible server (real HTTP, no Ray)."""

import asyncio
from collections import Counter

import pytest

from ultrachat.config.generation import Filters, GenerateStage
from ultrachat.devtools.fake_openai import FakeBehavior, FakeOpenAIServer
from ultrachat.generation import prompts
from ultrachat.llm.openai_backend import OpenAIChatBackend
from ultrachat.generation.dialogue import Simulator, invalid_record
from ultrachat.generation.filters import DialogueFilter
from ultrachat.generation.records import to_table
from ultrachat.ids import stable_id

HISTORY = [{"role": "user", "content": "What causes tides?"},
           {"role": "assistant", "content": "Mainly the Moon's gravity."}]


def stage(server, **extra) -> GenerateStage:
    chat = {"backend": "openai", "base_url": server.base_url, "model": "fake-chat", "api_key_env": "UC_KEY",
            "max_retries": 1, "backoff_initial_s": 0.01, "backoff_max_s": 0.02}
    return GenerateStage.model_validate({"openings": {"path": "x.jsonl"}, "user": {"chat": chat},
                                         "assistant": {"chat": chat, "system_prompt": "Be brief."}, **extra})


def opening(text="What causes tides?", sector="I"):
    return {"id": stable_id(sector, text), "sector": sector, "text": text, "source": "f.jsonl:1",
            "provenance": "{}", "invalid": ""}


async def simulate(config, openings):
    user, assistant = OpenAIChatBackend(config.user.chat), OpenAIChatBackend(config.assistant.chat)
    simulator = Simulator(config, user, assistant, DialogueFilter(config.filters))
    try:
        return await asyncio.gather(*(simulator.run(o) for o in openings))
    finally:
        await user.close()
        await assistant.close()


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv("UC_KEY", "k")


def test_user_simulator_sees_swapped_roles_and_the_instruction_after_the_history():
    messages = prompts.user_simulator_messages(HISTORY, "II", "a casual user", None)
    assert messages[0]["role"] == "system" and "a casual user" in messages[0]["content"]
    assert [m["role"] for m in messages[1:]] == ["assistant", "user"]
    assert messages[1]["content"] == "What causes tides?"
    last = messages[-1]["content"]
    assert last.startswith("Mainly the Moon's gravity.") and "Now you are the user again" in last
    assert "piece of writing" in last  # sector II keeps pushing toward the writing


def test_assistant_sees_the_conversation_as_it_happened():
    assert prompts.assistant_messages(HISTORY, None)[1:] == HISTORY
    assert prompts.assistant_messages(HISTORY, "")[0] == HISTORY[0]


def test_dialogues_follow_sector_round_ranges_and_record_every_turn():
    with FakeOpenAIServer() as server:
        config = stage(server)
        openings = [opening(f"Question number {i}?", sector) for i in range(12) for sector in ("I", "II")]
        records = asyncio.run(simulate(config, openings))
        bodies = list(server.stats.bodies)
    rounds = Counter()
    for record in records:
        assert record["status"] == "kept", record["filter_reasons"]
        bounds = getattr(config.rounds, record["sector"])
        assert bounds.min <= record["num_rounds"] <= bounds.max
        rounds[record["sector"], record["num_rounds"]] += 1
        roles = [m["role"] for m in record["messages"]]
        assert roles == ["user", "assistant"] * record["num_rounds"]
        assert len(record["turns"]) == len(roles)
        assert all(t["model"] == "fake-chat" and t["finish_reason"] for t in record["turns"][1:])
        assert record["usage"]["assistant_completion_tokens"] > 0
        assert record["persona"] in prompts.PERSONAS
    assert len({n for (s, n) in rounds if s == "I"}) >= 2  # rounds are sampled, not fixed
    user_requests = [b for b in bodies if "Now you are the user again" in b["messages"][-1]["content"]]
    assert user_requests and all(b["messages"][0]["role"] == "system" for b in user_requests)
    assert to_table(records).num_rows == len(records)  # the explicit Arrow schema accepts them


def test_same_seed_same_plan():
    with FakeOpenAIServer() as server:
        first = asyncio.run(simulate(stage(server), [opening()]))[0]
        second = asyncio.run(simulate(stage(server), [opening()]))[0]
    assert (first["num_rounds"], first["persona"]) == (second["num_rounds"], second["persona"])


def test_role_slip_and_polite_closings_are_handled_by_the_filters():
    replies = ["Tides come from gravity.", "As an AI language model, I can explain more.", "Sure."]
    with FakeOpenAIServer(FakeBehavior(replies=replies)) as server:
        config = stage(server, rounds={"I": {"min": 3, "max": 3}})
        (record,) = asyncio.run(simulate(config, [opening()]))
    assert record["status"] == "kept" and "trimmed:user_role_slip" in record["filter_reasons"]
    assert record["num_rounds"] == 1


def test_a_failing_endpoint_gives_a_failed_status_not_an_exception():
    with FakeOpenAIServer(FakeBehavior(required_api_key="other")) as server:
        (record,) = asyncio.run(simulate(stage(server), [opening()]))
    assert record["status"] == "failed:http_401" and "UC_KEY" in record["error"]


def test_disabled_filters_keep_everything():
    with FakeOpenAIServer(FakeBehavior(replies=["", "x"])) as server:
        config = stage(server, filters=Filters(empty_turn=False).model_dump())
        (record,) = asyncio.run(simulate(config, [opening()]))
    assert record["status"] == "kept"


def test_invalid_input_lines_get_their_own_status():
    row = {**opening(), "invalid": "malformed JSON"}
    assert invalid_record(row)["status"] == "invalid:malformed JSON"


def test_roles_on_the_same_endpoint_share_one_rate_limit_budget():
    from ultrachat.config.chat import OpenAIBackend
    from ultrachat.llm import make_backend

    chat = dict(backend="openai", base_url="http://127.0.0.1:9/v1", api_key_env="UC_KEY", requests_per_minute=60)
    user, assistant = make_backend(OpenAIBackend(model="a", **chat)), make_backend(OpenAIBackend(model="b", **chat))
    other = make_backend(OpenAIBackend(model="a", **{**chat, "base_url": "http://127.0.0.1:10/v1"}))
    assert user._limiter is assistant._limiter and other._limiter is not user._limiter
