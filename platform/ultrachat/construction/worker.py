"""Construction's row handler, run by ``ConstructionWorker`` actors (stages/pool.py): one call row in, one
result row out.

The reply is parsed into a list here; a reply with no list is a ``failed:unparseable`` result that
keeps the raw text, so one bad reply never stops the stage.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass

from ultrachat import observability
from ultrachat.config.construction import Construction
from ultrachat.construction.list_parser import parse_list
from ultrachat.construction.prompts import SINGLE_ITEM_STAGES
from ultrachat.ids import derived_seed
from ultrachat.llm import make_backend, shutdown_engines
from ultrachat.llm.base import ChatBackend, ChatError
from ultrachat.stages.pool import PoolWorker

logger = logging.getLogger(__name__)


class ConstructionWorker(PoolWorker):
    """The Ray Data actor of construction (the dashboard shows ``MapBatches(ConstructionWorker)``)."""


@dataclass
class CallHandlerFactory:
    """Picklable: travels to the actors, which call it once."""

    construction_json: str
    resolved_model: str | None

    def __call__(self) -> "CallHandler":
        config = Construction.model_validate_json(self.construction_json)
        return CallHandler(config, make_backend(config.llm.chat, self.resolved_model))


class CallHandler:
    def __init__(self, config: Construction, backend: ChatBackend):
        self.config, self.backend = config, backend

    async def run(self, call: dict) -> dict:
        return await self._one(call)

    def failed(self, call: dict, reason: str, error: str) -> dict:
        return {**self._empty(call, time.time()), "status": f"failed:{reason}", "error": error, "seconds": 0.0}

    def counts(self, results: list[dict]) -> Counter:
        counts: Counter = Counter()
        for r in results:
            counts["items"] += len(r["items"])
            counts["tokens_in"] += r["prompt_tokens"]
            counts["tokens_out"] += r["completion_tokens"]
        return counts

    def observe(self, results: list[dict]) -> None:
        observability.record_construction_calls(results)

    def close(self) -> None:
        shutdown_engines()

    def _empty(self, call: dict, started_at: float) -> dict:
        return {**call, "items": [], "raw": "", "error": "", "model": self.backend.model_name, "finish_reason": "",
                "prompt_tokens": 0, "completion_tokens": 0, "started_at": started_at}

    async def _one(self, call: dict) -> dict:
        role = self.config.llm
        messages = ([{"role": "system", "content": role.system_prompt}] if role.system_prompt else [])
        messages.append({"role": "user", "content": call["prompt"]})
        sampling = role.sampling
        if sampling.seed is not None:  # reproducible, yet different for every call
            sampling = sampling.model_copy(update={"seed": derived_seed(sampling.seed, call["call_id"])})
        started = time.monotonic()
        result = self._empty(call, time.time())
        try:
            reply = await self.backend.chat(messages, sampling)
        except ChatError as err:
            return {**result, "status": f"failed:{err.reason}", "error": str(err),
                    "seconds": round(time.monotonic() - started, 3)}
        observability.record_tokens("construction", reply.prompt_tokens, reply.completion_tokens)
        items = parse_reply(call["stage"], reply.text, reply.finish_reason)
        result.update(finish_reason=reply.finish_reason, prompt_tokens=reply.prompt_tokens,
                      completion_tokens=reply.completion_tokens, seconds=round(time.monotonic() - started, 3))
        if items is None:
            return {**result, "status": "failed:unparseable", "raw": reply.text,
                    "error": f"no list found in the reply (finish_reason={reply.finish_reason})"}
        return {**result, "status": "ok", "items": items[: call["want"]]}


def parse_reply(stage: str, text: str, finish_reason: str) -> list[str] | None:
    """The items of a reply, or None when it holds none."""
    if stage in SINGLE_ITEM_STAGES:
        items = parse_list(text)
        # A one-item reply is the item itself; a model that numbered it anyway gave a one-item list.
        single = items[0] if items else text.strip().strip('"“”').strip()
        if finish_reason == "length" or not single:
            return None  # a cut-off instruction is not a usable one
        return [single]
    items = parse_list(text)
    if items and finish_reason == "length" and len(items) > 1:
        items = items[:-1]  # the reply was cut off: its last item is likely cut mid-sentence
    return items

