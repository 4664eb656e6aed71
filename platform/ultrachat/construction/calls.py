"""Which LLM calls construction makes: the stage graph, and each call derived from its parent.

Pure functions of the config and the parents' results, so the plan is the same on every run: a call's
id is a hash of its stage, its parent item and its part number, which is what resume keys on (a call
whose id is already in the output is not made again).

    sector I   subtopics (per meta-topic) -> topic_questions -> further_questions
               meta_questions (per entity) -> specific_questions, extended_questions
    sector II  instructions (per material type) -> refined_instructions (a configured share)
    sector III material_instructions (per text piece)
"""

from __future__ import annotations

import hashlib
import json
import math

from ultrachat.config.construction import Construction
from ultrachat.construction import prompts
from ultrachat.ids import stable_id

# Stages by depth: each wave's parents are all written before it runs.
WAVES: tuple[tuple[str, ...], ...] = (
    ("subtopics", "meta_questions", "instructions", "material_instructions"),
    ("topic_questions", "specific_questions", "extended_questions", "refined_instructions"),
    ("further_questions",),
)
CHILDREN: dict[str, tuple[str, ...]] = {
    "subtopics": ("topic_questions",),
    "topic_questions": ("further_questions",),
    "meta_questions": ("specific_questions", "extended_questions"),
    "instructions": ("refined_instructions",),
}
PARENT = {child: parent for parent, children in CHILDREN.items() for child in children}
SECTOR = {"subtopics": "I", "topic_questions": "I", "further_questions": "I", "meta_questions": "I",
          "specific_questions": "I", "extended_questions": "I", "instructions": "II",
          "refined_instructions": "II", "material_instructions": "III"}


def unit_hash(*parts: object) -> float:
    """A stable number in [0, 1) for a choice that must not change between runs."""
    digest = hashlib.blake2b("\x00".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class CallPlanner:
    def __init__(self, config: Construction):
        self.config = config
        self.templates = {**prompts.DEFAULT_PROMPTS, **config.prompts}

    def items_per_parent(self, stage: str) -> int:
        """Items a parent of ``stage`` asks for (0: the stage is off)."""
        c = self.config
        topics = c.I.topics if c.I else None
        entities = c.I.entities if c.I else None
        counts = {
            "subtopics": topics.subtopics_per_meta_topic if topics else 0,
            "topic_questions": topics.questions_per_subtopic if topics else 0,
            "further_questions": topics.further_questions_per_question if topics else 0,
            "meta_questions": entities.meta_questions_per_entity if entities else 0,
            "specific_questions": entities.specific_per_meta_question if entities else 0,
            "extended_questions": entities.extended_per_meta_question if entities else 0,
            "instructions": c.II.instructions_per_type if c.II else 0,
            "refined_instructions": 1 if c.II and c.II.refine_fraction > 0 else 0,
            "material_instructions": c.III.instructions_per_piece if c.III else 0,
        }
        return counts[stage]

    def parts(self, stage: str) -> int:
        """Calls per parent: long lists are asked for in parts of at most max_items_per_call."""
        n = self.items_per_parent(stage)
        return math.ceil(n / self.config.max_items_per_call) if n else 0

    def calls(self, stage: str, parent_key: str, values: dict, context: dict) -> list[dict]:
        """The calls asking ``stage``'s items for one parent; ``values`` fill the prompt template."""
        total = self.items_per_parent(stage)
        if not total:
            return []
        size = 1 if stage in prompts.SINGLE_ITEM_STAGES else self.config.max_items_per_call
        parts = math.ceil(total / size)
        context_json = json.dumps({"sector": SECTOR[stage], **context}, ensure_ascii=False, sort_keys=True)
        out = []
        for part in range(parts):
            want = min(size, total - part * size)
            prompt = prompts.render(self.templates[stage], n=want, part=part + 1, parts=parts, **values)
            out.append({"call_id": stable_id(stage, f"{parent_key}\x00{part}"), "stage": stage,
                        "sector": SECTOR[stage], "prompt": prompt, "want": want, "part": part + 1,
                        "parts": parts, "context": context_json})
        return out

    # ---------------------------------------------------------------- roots (wave 0)

    def meta_topic_calls(self, meta_topic: str) -> list[dict]:
        return self.calls("subtopics", f"meta_topic:{meta_topic}", {"meta_topic": meta_topic},
                          {"branch": "topics", "meta_topic": meta_topic})

    def entity_calls(self, entity: dict) -> list[dict]:
        name, description = entity["name"], entity.get("description") or ""
        return self.calls("meta_questions", f"entity:{name}",
                          {"entity": name, "description": f" ({description})" if description else ""},
                          {"branch": "entities", "entity": name, "entity_description": description,
                           "entity_source": entity.get("source", "")})

    def material_type_calls(self, material_type: str) -> list[dict]:
        return self.calls("instructions", f"material_type:{material_type}", _type_values(material_type),
                          {"material_type": material_type})

    def material_calls(self, material: dict) -> list[dict]:
        mtype = material["material_type"] or "other"
        return self.calls("material_instructions", f"material:{material['material_id']}",
                          {**_type_values(mtype), "text": material["text"], "url": material["url"]},
                          {"material_type": mtype, "material_id": material["material_id"], "url": material["url"],
                           "material_source": material["source"], "text": material["text"],
                           "truncated": material["truncated"], "tokens_before": material["tokens_before"]})

    # ---------------------------------------------------------------- children (waves 1, 2)

    def child_calls(self, result: dict) -> list[dict]:
        """The calls of the stages below ``result``'s stage, one set per item of an "ok" result."""
        if result["status"] != "ok":
            return []
        context = json.loads(result["context"])
        context.pop("sector", None)
        out: list[dict] = []
        for index, item in enumerate(result["items"]):
            key = f"{result['call_id']}#{index}"
            for child in CHILDREN.get(result["stage"], ()):
                out += self._child(child, key, item, context)
        return out

    def _child(self, stage: str, key: str, item: str, context: dict) -> list[dict]:
        if stage == "topic_questions":
            return self.calls(stage, key, {"subtopic": item, "meta_topic": context["meta_topic"]},
                              {**context, "subtopic": item})
        if stage == "further_questions":
            return self.calls(stage, key, {"question": item, "subtopic": context["subtopic"],
                                           "meta_topic": context["meta_topic"]},
                              {**context, "parent_question": item, "parent_question_id": stable_id("I", item)})
        if stage in ("specific_questions", "extended_questions"):
            return self.calls(stage, key, {"question": item, "entity": context["entity"]},
                              {**context, "meta_question": item, "parent_question_id": stable_id("I", item)})
        if stage == "refined_instructions":
            if not self.refines(key):
                return []
            return self.calls(stage, key, {"instruction": item, **_type_values(context["material_type"])},
                              {**context, "original_instruction": item})
        raise AssertionError(f"no child rule for stage {stage}")

    def refines(self, instruction_key: str) -> bool:
        """Whether this instruction is one of the share the LLM refines (stable per instruction)."""
        fraction = self.config.II.refine_fraction if self.config.II else 0.0
        return unit_hash(self.config.seed, "refine", instruction_key) < fraction

    def refine_call_id(self, instruction_key: str) -> str:
        return stable_id("refined_instructions", f"{instruction_key}\x000")


def _type_values(material_type: str) -> dict:
    return {"material_type": material_type, "material_type_lower": material_type.lower()}
