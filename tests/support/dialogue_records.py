"""Dialogue output records for tests that build an output folder by hand."""

from __future__ import annotations


def record(id_: str, status: str, started_at: float = 0.0) -> dict:
    """A minimal record of DIALOGUE_SCHEMA: the columns resume, compaction and summaries read."""
    return {"id": id_, "prompt": f"opening {id_}", "prompt_id": id_, "sector": "I",
            "opening": {"text": f"opening {id_}", "source": "s", "provenance": "{}"},
            "messages": [{"role": "user", "content": f"opening {id_}"}, {"role": "assistant", "content": "A."}],
            "num_rounds": 1, "user_model": "", "assistant_model": "", "persona": "", "turns": [],
            "usage": {"user_prompt_tokens": 1, "user_completion_tokens": 2, "assistant_prompt_tokens": 3,
                      "assistant_completion_tokens": 4},
            "status": status, "filter_reasons": [], "error": "", "started_at": started_at, "seconds": 0.0}
