"""Dry run: the LLM calls and opening lines each stage would make, before spending anything.

Reads the inputs (entities, corpus: no LLM) and what earlier runs already stored, then projects each
stage as if every call returned the number of items it asks for, which is the upper bound the bill
follows. Stages below a stage that has not run yet are estimates; the report says which.
"""

from __future__ import annotations

import logging

from ultrachat import storage
from ultrachat.construction.calls import PARENT, WAVES, CallPlanner
from ultrachat.construction.candidates import QUESTION_STAGES
from ultrachat.construction.run import CALLS_DIR, stored_status
from ultrachat.construction.sources import load_inputs

logger = logging.getLogger(__name__)


def plan_construction(config) -> dict:
    c = config.construction
    planner = CallPlanner(c)
    source = load_inputs(config)
    calls_root = storage.join(config.output_dir, CALLS_DIR)
    roots = {"subtopics": len(source.meta_topics), "meta_questions": len(source.entities),
             "instructions": len(source.material_types),
             "material_instructions": source.stats.get("materials", {}).get("pieces_used", 0)}
    stages: dict[str, dict] = {}
    for wave in WAVES:
        for stage in wave:
            if not planner.items_per_parent(stage):
                continue
            parents = roots[stage] if stage in roots else stages.get(PARENT[stage], {}).get("items", 0)
            share = c.II.refine_fraction if stage == "refined_instructions" else 1.0
            calls = round(parents * share) * planner.parts(stage)
            status = stored_status(calls_root, stage)
            done = sum(1 for s in status.values() if s == "ok")
            stages[stage] = {"parents": parents, "calls": calls, "already_done": done,
                             "to_run": max(calls - done, 0), "items": round(parents * share) * planner.items_per_parent(stage),
                             "estimated": stage not in roots}
    candidates = {
        "I": sum(stages.get(s, {}).get("items", 0) for s in QUESTION_STAGES),
        "II": stages.get("instructions", {}).get("items", 0),  # refined or not, one opening per instruction
        "III": stages.get("material_instructions", {}).get("items", 0),
    }
    sectors = {name: {"target": getattr(c, name).target, "candidates_at_most": candidates[name],
                      "openings_at_most": min(getattr(c, name).target, candidates[name])}
               for name in ("I", "II", "III") if getattr(c, name) is not None}
    for name, s in sectors.items():
        if s["candidates_at_most"] < s["target"]:
            logger.warning("dry run: sector %s can give at most %d candidates for a target of %d; fix: raise the "
                           "per-parent counts of construction.%s", name, s["candidates_at_most"], s["target"], name)
    total_calls = sum(s["to_run"] for s in stages.values())
    for stage, s in stages.items():
        logger.info("dry run: %-22s %8d parents -> %8d LLM calls (%d already done, %d to run) -> %9d items%s",
                    stage, s["parents"], s["calls"], s["already_done"], s["to_run"], s["items"],
                    " (estimate)" if s["estimated"] else "")
    for name, s in sectors.items():
        logger.info("dry run: sector %-3s target %8d, at most %8d candidates -> %8d opening lines", name,
                    s["target"], s["candidates_at_most"], s["openings_at_most"])
    return {"inputs": source.stats, "stages": stages, "sectors": sectors, "llm_calls_to_run": total_calls}

