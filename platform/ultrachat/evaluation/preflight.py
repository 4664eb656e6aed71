"""Before any paid call: is each endpoint up, does it take the key, does it serve the model?

One ``GET /v1/models`` per endpoint. A server that is down, refuses the key or does not list the
configured model is an ``InputError`` naming the config key, at once; without this the job would learn
it only after every call's retries. An endpoint whose /v1/models fails otherwise (some hosted APIs
restrict it) is only warned about: the calls themselves then decide.
"""

from __future__ import annotations

import logging

import httpx

from ultrachat.config.evaluation import EvaluateStage
from ultrachat.errors import InputError

logger = logging.getLogger(__name__)


def check_endpoints(config: EvaluateStage, secrets: dict[str, str]) -> None:
    endpoints = [(f"candidates[{i}]", c.chat) for i, c in enumerate(config.candidates)]
    endpoints.append(("judge", config.judge.chat))
    listed: dict[tuple[str, str], list[str] | None] = {}
    problems = []
    for where, chat in endpoints:
        ident = (chat.base_url, chat.api_key_env)
        if ident not in listed:
            try:
                listed[ident] = _models(chat.base_url, secrets.get(chat.api_key_env or "", "EMPTY"), min(chat.timeout_s, 30))
            except InputError as err:
                problems.append(f"{where}.chat: {err}")
                listed[ident] = None
                continue
        models = listed[ident]
        if models and chat.model not in models:
            problems.append(f"{where}.chat.model: {chat.base_url} does not serve {chat.model!r}; it serves {models}")
    if problems:
        raise InputError("endpoint check failed (evaluate.preflight: false skips it):\n  " + "\n  ".join(problems))


def _models(base_url: str, key: str, timeout: float) -> list[str] | None:
    url = base_url.rstrip("/") + "/models"
    try:
        reply = httpx.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout)
    except httpx.HTTPError as err:
        raise InputError(f"base_url {base_url} is not reachable ({type(err).__name__}: {err}). Fix: start the "
                         f"server (e.g. `ultrachat serve`) or correct base_url") from None
    if reply.status_code in (401, 403):
        raise InputError(f"{base_url} refused the API key (HTTP {reply.status_code}); check the variable "
                         f"api_key_env names")
    if reply.status_code != 200:
        logger.warning("%s answered HTTP %d; going ahead, the calls will tell", url, reply.status_code)
        return None
    try:
        return [m["id"] for m in reply.json()["data"]]
    except (ValueError, KeyError, TypeError):
        raise InputError(f"base_url {base_url}: GET /models answered 200 with something that is not an "
                         f"OpenAI model list ({reply.text[:120]!r}); is this an OpenAI-compatible /v1 URL?") from None
