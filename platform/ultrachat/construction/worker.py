"""The Ray Data actor that makes construction's LLM calls: one call row in, one result row out.

Same shape as the dialogue actor (generation/worker.py): an async ``__call__`` so every call of every
batch in flight shares the actor's event loop and, for vLLM, one engine, created on first use. The
reply is parsed into a list here; a reply with no list is an ``failed:unparseable`` result that keeps
the raw text, so one bad reply never stops the stage.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sys
import time
from collections import Counter

import pyarrow as pa
import ray

from ultrachat import observability
from ultrachat.config.construction import Construction
from ultrachat.construction.list_parser import parse_list
from ultrachat.construction.prompts import SINGLE_ITEM_STAGES
from ultrachat.construction.records import RESULT_SCHEMA
from ultrachat.generation.backends import make_backend
from ultrachat.generation.backends.base import ChatError
from ultrachat.logs import setup_logging

logger = logging.getLogger(__name__)


class ConstructionWorker:
    def __init__(self, construction_json: str, resolved_model: str | None, todo: list, progress_name: str,
                 namespace: str, secrets: dict[str, str], log_level: str = "INFO", run: str = "generate"):
        setup_logging(log_level, role=f"actor=ConstructionWorker pid={os.getpid()}")
        observability.set_run(run)
        self.config = Construction.model_validate_json(construction_json)
        self.resolved_model = resolved_model
        self.todo: set[str] = ray.get(todo[0])  # the call ids to make, shared via the object store
        self.progress = ray.get_actor(progress_name, namespace=namespace)
        for name, value in secrets.items():  # API keys reach the backend, never a config or a log
            os.environ.setdefault(name, value)
        self.backend = None

    async def __call__(self, batch: pa.Table) -> pa.Table:
        if self.backend is None:
            self.backend = make_backend(self.config.llm.chat, self.resolved_model)
        rows = [r for r in batch.to_pylist() if r["call_id"] in self.todo]
        results = await asyncio.gather(*(self._one(row) for row in rows))
        if results:
            self.progress.add.remote(result_counts(results))
            observability.record_construction_calls(results)
        return pa.Table.from_pylist(list(results), schema=RESULT_SCHEMA)

    def __del__(self):
        # Ray Data drops the UDF on graceful actor exit: stop the vLLM engine processes cleanly.
        if self.backend is not None and "ultrachat.generation.backends.vllm_backend" in sys.modules:
            sys.modules["ultrachat.generation.backends.vllm_backend"].shutdown_engines()

    async def _one(self, call: dict) -> dict:
        role = self.config.llm
        messages = ([{"role": "system", "content": role.system_prompt}] if role.system_prompt else [])
        messages.append({"role": "user", "content": call["prompt"]})
        sampling = role.sampling
        if sampling.seed is not None:  # reproducible, yet different for every call
            digest = hashlib.sha256(f"{sampling.seed}:{call['call_id']}".encode()).digest()
            sampling = sampling.model_copy(update={"seed": int.from_bytes(digest[:4], "big") & 0x7FFFFFFF})
        started, started_at = time.monotonic(), time.time()
        result = {**call, "items": [], "raw": "", "error": "", "model": self.backend.model_name, "finish_reason": "",
                  "prompt_tokens": 0, "completion_tokens": 0, "started_at": started_at}
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


def result_counts(results: list[dict]) -> dict:
    counts: Counter = Counter(done=len(results))
    for r in results:
        counts[r["status"].split(":", 1)[0]] += 1
        counts["items"] += len(r["items"])
        counts["tokens_in"] += r["prompt_tokens"]
        counts["tokens_out"] += r["completion_tokens"]
    return dict(counts)
