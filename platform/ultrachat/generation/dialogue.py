"""One UltraChat dialogue: the assistant answers, the user simulator continues, for N sampled rounds.

Backend-agnostic (any ChatBackend), so it is unit-tested against the fake OpenAI server and runs on
vLLM engines inside the Ray Data actors unchanged.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from ultrachat import observability
from ultrachat.config.chat import Sampling
from ultrachat.config.generation import GenerateStage
from ultrachat.generation import prompts
from ultrachat.llm.base import ChatBackend, ChatError, ChatResult
from ultrachat.generation.filters import DialogueFilter
from ultrachat.generation.records import empty_usage
from ultrachat.ids import derived_seed


@dataclass
class Simulator:
    """Everything a dialogue needs, built once per actor."""

    config: GenerateStage
    user: ChatBackend
    assistant: ChatBackend
    dialogue_filter: DialogueFilter

    async def run(self, opening: dict) -> dict:
        """Simulate the dialogue for one valid opening row; return its output record (never raises
        on a chat failure: that becomes status ``failed:<reason>``)."""
        started, started_at = time.monotonic(), time.time()
        rng = random.Random(derived_seed(self.config.seed, opening["id"], 0))
        bounds = getattr(self.config.rounds, opening["sector"])
        rounds = rng.randint(bounds.min, bounds.max)
        persona = prompts.pick_persona(rng, self.config.personas)
        history = [{"role": "user", "content": opening["text"]}]
        turns = [_turn("user", "opening", None, 0, 0)]
        usage = empty_usage()
        status, error, reasons = "", "", []
        try:
            for round_index in range(rounds):
                reply = await self._assistant_turn(history, opening["id"], round_index)
                self._record(history, turns, usage, "assistant", reply)
                if round_index == rounds - 1 or not reply.text.strip():
                    break
                question = await self._user_turn(history, opening, persona, round_index)
                self._record(history, turns, usage, "user", question)
                if not question.text.strip():
                    break
        except ChatError as err:
            status, error = f"failed:{err.reason}", str(err)
        if not status:
            outcome = self.dialogue_filter(history, [t["finish_reason"] for t in turns])
            history, status, reasons = outcome.messages, outcome.status, list(outcome.reasons)
        return {
            "id": opening["id"],
            "prompt": opening["text"],
            "prompt_id": opening["id"],
            "sector": opening["sector"],
            "opening": {"text": opening["text"], "source": opening["source"], "provenance": opening["provenance"]},
            "messages": history,
            "num_rounds": sum(1 for m in history if m["role"] == "assistant"),
            "user_model": self.user.model_name,
            "assistant_model": self.assistant.model_name,
            "persona": persona,
            "turns": turns,  # every generated turn (the log behind usage), even ones a filter trimmed
            "usage": usage,
            "status": status,
            "filter_reasons": reasons,
            "error": error,
            "started_at": started_at,
            "seconds": round(time.monotonic() - started, 3),
        }

    async def _assistant_turn(self, history, dialogue_id: str, round_index: int) -> ChatResult:
        role = self.config.assistant
        messages = prompts.assistant_messages(history, role.system_prompt)
        return await self.assistant.chat(messages, _turn_sampling(role.sampling, dialogue_id, 2 * round_index))

    async def _user_turn(self, history, opening: dict, persona: str, round_index: int) -> ChatResult:
        role = self.config.user
        messages = prompts.user_simulator_messages(history, opening["sector"], persona, role.system_prompt)
        return await self.user.chat(messages, _turn_sampling(role.sampling, opening["id"], 2 * round_index + 1))

    @staticmethod
    def _record(history, turns, usage, role: str, result: ChatResult) -> None:
        history.append({"role": role, "content": result.text.strip()})
        turns.append(_turn(role, result.model, result.finish_reason, result.prompt_tokens, result.completion_tokens))
        usage[f"{role}_prompt_tokens"] += result.prompt_tokens
        usage[f"{role}_completion_tokens"] += result.completion_tokens
        observability.record_tokens(role, result.prompt_tokens, result.completion_tokens)


def invalid_record(opening: dict) -> dict:
    """The record of an input line that could not be used: its one recorded status."""
    return {
        "id": opening["id"], "prompt": opening["text"], "prompt_id": opening["id"], "sector": opening["sector"],
        "opening": {"text": opening["text"], "source": opening["source"], "provenance": opening["provenance"]},
        "messages": [], "num_rounds": 0, "user_model": "", "assistant_model": "", "persona": "",
        "turns": [], "usage": empty_usage(), "status": f"invalid:{opening['invalid']}",
        "filter_reasons": [], "error": "", "started_at": time.time(), "seconds": 0.0,
    }


def _turn(role, model, finish_reason, prompt_tokens, completion_tokens) -> dict:
    return {"role": role, "model": model, "finish_reason": finish_reason,
            "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}



def _turn_sampling(sampling: Sampling, dialogue_id: str, turn: int) -> Sampling:
    # A configured seed makes every turn reproducible yet different across turns and dialogues.
    if sampling.seed is None:
        return sampling
    return sampling.model_copy(update={"seed": derived_seed(sampling.seed, dialogue_id, turn)})
