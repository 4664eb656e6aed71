"""Opening-line candidates from the stage results: which items become opening lines, with provenance.

    sector I   topic_questions, further_questions, specific_questions, extended_questions (each item)
    sector II  refined_instructions; an instruction not chosen for refinement, or whose refinement
               failed, is used as written (``refined: false`` in its provenance)
    sector III each instruction about a piece, joined to the piece with one of the paper's templates

Subtopics and meta-questions are scaffolding, not opening lines. Every candidate carries a stable id
(a hash of sector and text, so the same line gets the same id wherever it came from), the ``group``
path sampling balances over, and its de-duplication keys.
"""

from __future__ import annotations

import json

from ultrachat.config.construction import Construction
from ultrachat.construction.calls import CallPlanner, unit_hash
from ultrachat.construction.dedup import MinHasher, exact_key, near_key
from ultrachat.ids import stable_id

QUESTION_STAGES = ("topic_questions", "further_questions", "specific_questions", "extended_questions")
OPENING_STAGES = QUESTION_STAGES + ("instructions", "refined_instructions", "material_instructions")
# Context keys that are working data of a stage, not provenance of the opening line.
_NOT_PROVENANCE = ("text",)


class CandidateBuilder:
    """A picklable ``flat_map`` function: one result row -> its opening-line candidates."""

    def __init__(self, config: Construction, templates: dict[str, str], refined_ok: set[str] | None = None):
        self.planner = CallPlanner(config)
        self.config = config
        self.refined_ok = refined_ok or set()
        chosen = (config.III.templates if config.III else None) or list(templates)
        self.templates = {tid: templates[tid] for tid in chosen}
        d = config.dedup
        self.minhash = MinHasher(d.num_perm, d.bands, d.shingle_words, config.seed) if d.minhash else None

    def __call__(self, result: dict) -> list[dict]:
        if result["status"] != "ok" or result["stage"] not in OPENING_STAGES:
            return []
        context = json.loads(result["context"])
        out = []
        for index, item in enumerate(result["items"]):
            made = self._candidate(result, context, index, item)
            if made is not None:
                out.append({"key": f"{result['call_id']}#{index}", **self._with_keys(made)})
        return out

    def _candidate(self, result: dict, context: dict, index: int, item: str) -> dict | None:
        stage, key = result["stage"], f"{result['call_id']}#{index}"
        provenance = {k: v for k, v in context.items() if k not in _NOT_PROVENANCE}
        provenance.update(stage=stage, call_id=result["call_id"], item=index)
        if stage in QUESTION_STAGES:
            branch = context["branch"]
            # Even across meta-topics (entities), then across subtopics (meta-questions) inside each.
            group = ([branch, context["meta_topic"], context["subtopic"]] if branch == "topics"
                     else [branch, context["entity"], context["meta_question"]])
            return _make("I", item, provenance, group)
        if stage == "instructions":
            refine_id = self.planner.refine_call_id(key)
            if self.planner.refines(key) and refine_id in self.refined_ok:
                return None  # its refined version stands in for it
            provenance.update(refined=False, refine_failed=self.planner.refines(key))
            return _make("II", item, provenance, [context["material_type"]])
        if stage == "refined_instructions":
            provenance.update(refined=True)
            return _make("II", item, provenance, [context["material_type"]])
        # material_instructions: the paper joins instruction and text with one of its 7 templates.
        ids = sorted(self.templates)
        template_id = ids[int(unit_hash(self.config.seed, "template", key) * len(ids))]
        text = self.templates[template_id].format(text=context["text"], instruction=item.strip())
        provenance.update(template_id=template_id, instruction=item.strip())
        made = _make("III", text, provenance, [context["material_type"], context["material_id"]])
        # The piece dominates the text, so its 5 instructions would look alike to MinHash: compare
        # what differs, the instruction, within the same piece.
        made["near_text"] = f"{context['material_id']} {item.strip()}"
        return made

    def _with_keys(self, candidate: dict) -> dict:
        near_text = candidate.pop("near_text", candidate["text"])
        bands = self.minhash.band_keys(near_text).tolist() if self.minhash else []
        return {**candidate, "exact_key": exact_key(candidate["text"]), "near_key": near_key(near_text),
                "bands": bands}


def _make(sector: str, text: str, provenance: dict, group: list[str]) -> dict:
    text = text.strip()
    return {"id": stable_id(sector, text), "sector": sector, "text": text,
            "provenance": json.dumps({"sector": sector, **provenance}, ensure_ascii=False, sort_keys=True),
            "group": group}
