"""A chat backend that answers at once, in process: for measuring the platform's own data plane
(bench/data_plane.py) and for tests, never for data.

``chat.backend: instant``. Each reply is a short, varied sentence built from the request (so the
filters see ordinary text), with token counts estimated from its words. No network, no model: what a
job spends around it is the platform's own cost (reading, planning, Ray Data, the actors' loop,
records, shards, compaction, JSONL).
"""

from __future__ import annotations

import hashlib

from ultrachat.config.chat import InstantBackend, Sampling
from ultrachat.llm.base import ChatResult

_WORDS = ("river", "method", "careful", "history", "signal", "garden", "theory", "balance", "market",
          "lantern", "climate", "practice", "network", "harvest", "example", "question")


class InstantChatBackend:
    def __init__(self, config: InstantBackend):
        self.config = config
        self.model_name = config.model

    async def chat(self, messages: list[dict[str, str]], sampling: Sampling) -> ChatResult:
        last = messages[-1]["content"] if messages else ""
        digest = hashlib.blake2b(f"{len(messages)}:{last}".encode(), digest_size=16).digest()
        words = min(self.config.reply_words, sampling.max_tokens)
        text = " ".join(_WORDS[b % len(_WORDS)] for b in (digest * (words // 16 + 1))[:words])
        prompt_tokens = sum(len(m["content"].split()) for m in messages)
        # The user simulator (asked after an assistant turn) asks; the assistant answers.
        end = "?" if messages and messages[-1]["role"] == "assistant" else "."
        return ChatResult(text.capitalize() + end, "stop", prompt_tokens, words, self.model_name)

    async def close(self) -> None:
        pass
