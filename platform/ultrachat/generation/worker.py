"""The dialogue stage's row handler, run by ``DialogueWorker`` actors (stages/pool.py).

The backends (and, for vLLM, the engine) are made in the actor on its first batch, on its event loop,
because vLLM's AsyncLLM binds its output handler to the loop it first runs on.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from ultrachat import observability
from ultrachat.config.generation import GenerateStage
from ultrachat.generation.dialogue import Simulator, invalid_record
from ultrachat.generation.filters import DialogueFilter
from ultrachat.llm import make_backend, shutdown_engines
from ultrachat.stages.pool import PoolWorker


class DialogueWorker(PoolWorker):
    """The Ray Data actor of the dialogue stage (the dashboard shows ``MapBatches(DialogueWorker)``)."""


@dataclass
class DialogueHandlerFactory:
    """Picklable: travels to the actors, which call it once."""

    stage_json: str
    resolved_models: dict[str, str]

    def __call__(self) -> "DialogueHandler":
        stage = GenerateStage.model_validate_json(self.stage_json)
        user = make_backend(stage.user.chat, self.resolved_models.get("user"))
        assistant = make_backend(stage.assistant.chat, self.resolved_models.get("assistant"))
        return DialogueHandler(Simulator(stage, user, assistant, DialogueFilter(stage.filters)))


@dataclass
class DialogueHandler:
    simulator: Simulator

    async def run(self, row: dict) -> dict:
        if row["invalid"]:
            return invalid_record(row)
        return await self.simulator.run(row)

    def failed(self, row: dict, reason: str, error: str) -> dict:
        return {**invalid_record(row), "status": f"failed:{reason}", "error": error, "started_at": time.time()}

    def counts(self, records: list[dict]) -> Counter:
        counts = Counter()
        for record in records:
            usage = record["usage"]
            counts["tokens_in"] += usage["user_prompt_tokens"] + usage["assistant_prompt_tokens"]
            counts["tokens_out"] += usage["user_completion_tokens"] + usage["assistant_completion_tokens"]
        return counts

    def observe(self, records: list[dict]) -> None:
        observability.record_dialogues(records)

    def close(self) -> None:
        shutdown_engines()


def describe_dialogues(c: Counter, total: int, elapsed: float) -> str:
    return (f"dialogues {c['done']}/{total} (kept {c['kept']}, filtered {c['filtered']}, failed {c['failed']}, "
            f"invalid {c['invalid']}) | tokens in {c['tokens_in']} out {c['tokens_out']} | "
            f"{c['done'] / elapsed:.2f} dialogues/s")
