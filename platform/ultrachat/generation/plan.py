"""Dry run of the dialogue stage: the LLM calls it would make, before spending anything."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def plan_dialogue_calls(config, openings: dict[str, int]) -> dict:
    """``openings``: sector -> opening lines to simulate. Calls per dialogue: one assistant turn per round
    and one user turn between rounds, at the mean of each sector's round range."""
    per_sector = {}
    for sector, count in openings.items():
        bounds = getattr(config.rounds, sector)
        mean_rounds = (bounds.min + bounds.max) / 2
        per_sector[sector] = {"dialogues": count, "llm_calls": round(count * (2 * mean_rounds - 1))}
    total = {"dialogues": sum(s["dialogues"] for s in per_sector.values()),
             "llm_calls": sum(s["llm_calls"] for s in per_sector.values())}
    logger.info("dry run: dialogues %d -> about %d LLM calls (%s)", total["dialogues"], total["llm_calls"], per_sector)
    return {**total, "sectors": per_sector}
