"""The Ray Data actor that turns a batch of opening rows into dialogue records.

Async ``__call__``: Ray Data runs it on the actor's event loop, so every dialogue of every batch in
flight shares that loop and, for vLLM, one engine. The engine is created on the first call, on that
loop, because vLLM's AsyncLLM binds its output handler to the loop it first runs on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import pyarrow as pa
import ray

from ultrachat import observability
from ultrachat.config.generation import GenerateStage
from ultrachat.generation.backends import make_backend
from ultrachat.generation.dialogue import Simulator, invalid_record
from ultrachat.generation.filters import DialogueFilter
from ultrachat.generation.progress import batch_counts
from ultrachat.generation.records import to_table
from ultrachat.logs import setup_logging

logger = logging.getLogger(__name__)


class DialogueWorker:
    def __init__(self, stage_json: str, resolved_models: dict[str, str], todo: list, progress_name: str,
                 namespace: str, secrets: dict[str, str], log_level: str = "INFO", run: str = "generate"):
        setup_logging(log_level, role=f"actor=DialogueWorker pid={os.getpid()}")
        observability.set_run(run)
        self.stage = GenerateStage.model_validate_json(stage_json)
        self.resolved_models = resolved_models
        # The work plan (id -> the one source line to run it from), shared read-only via the object store.
        self.todo: dict[str, str] = ray.get(todo[0])
        self.progress = ray.get_actor(progress_name, namespace=namespace)
        for name, value in secrets.items():  # API keys: reach the backends, never a config or log
            os.environ.setdefault(name, value)
        self.simulator: Simulator | None = None

    def _start(self) -> Simulator:
        user = make_backend(self.stage.user.chat, self.resolved_models.get("user"))
        assistant = make_backend(self.stage.assistant.chat, self.resolved_models.get("assistant"))
        return Simulator(self.stage, user, assistant, DialogueFilter(self.stage.filters))

    async def __call__(self, batch: pa.Table) -> pa.Table:
        if self.simulator is None:
            self.simulator = self._start()
        rows = [r for r in batch.to_pylist() if self.todo.get(r["id"]) == r["source"]]
        records = await asyncio.gather(*(self._one(row) for row in rows))
        if records:
            self.progress.add.remote(batch_counts(records))
            observability.record_dialogues(records)
        return to_table(list(records))

    def __del__(self):
        # Ray Data drops the UDF on graceful actor exit: stop the vLLM engine processes cleanly.
        if self.simulator is not None and "ultrachat.generation.backends.vllm_backend" in sys.modules:
            sys.modules["ultrachat.generation.backends.vllm_backend"].shutdown_engines()

    async def _one(self, row: dict) -> dict:
        if row["invalid"]:
            return invalid_record(row)
        return await self.simulator.run(row)
