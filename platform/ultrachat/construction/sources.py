"""The user's inputs to construction: entities (sector I) and C4-style text pieces (sector III).

Each record becomes one row, valid or flagged ``invalid`` with the reason and its ``file:line``,
so a bad record is counted and reported, never a crashed job. Text pieces are sorted into material
types by URL keywords (construction/url_classifier.py) and cut to a token budget, the cut recorded.
"""

from __future__ import annotations

import functools
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ultrachat.construction.url_classifier import UrlClassifier
from ultrachat.ids import stable_id
from ultrachat.ids import source_order
from ultrachat.inputs import Malformed, keep_rows, list_input_files, read_records
from ultrachat.errors import InputError

logger = logging.getLogger(__name__)

_NAME_KEYS = ("name", "entity", "label", "title")


def entity_row(record: Any, source: str) -> dict:
    """An entity record (``{"name", "description"?}`` or a text line) -> {name, description, source, invalid}."""
    row = {"name": "", "description": "", "source": source, "invalid": ""}
    if isinstance(record, Malformed):
        return {**row, "invalid": record.reason}
    if isinstance(record, str):
        return {**row, "name": record.strip()}
    if not isinstance(record, dict):
        return {**row, "invalid": f"expected a JSON object with 'name', got {type(record).__name__}"}
    name = next((record[k] for k in _NAME_KEYS if isinstance(record.get(k), str) and record[k].strip()), None)
    if name is None:
        return {**row, "invalid": "no non-empty 'name' (or 'entity', 'label', 'title')"}
    description = record.get("description")
    if description is not None and not isinstance(description, str):
        return {**row, "invalid": f"'description' must be a string, got {type(description).__name__}"}
    return {**row, "name": name.strip(), "description": (description or "").strip()}


class Truncator:
    """Cuts a text to at most ``budget`` tokens of ``tokenizer`` (an HF tokenizer dir/id), or of
    whitespace-separated words when no tokenizer is given. Cuts fall on a word boundary."""

    def __init__(self, budget: int, tokenizer: str | None = None):
        self.budget, self.tokenizer = budget, tokenizer
        self.unit = "tokens" if tokenizer else "words"

    def __call__(self, text: str) -> tuple[str, int, int]:
        """(kept text, units before, units after)."""
        if self.tokenizer is None:
            words = list(re.finditer(r"\S+", text))
            if len(words) <= self.budget:
                return text, len(words), len(words)
            return text[: words[self.budget - 1].end()], len(words), self.budget
        tok = _load_tokenizer(self.tokenizer)
        ids = tok.encode(text, add_special_tokens=False)
        if len(ids) <= self.budget:
            return text, len(ids), len(ids)
        cut = tok.decode(ids[: self.budget], skip_special_tokens=True)
        # The last token may be half a word: end at the last whole word the budget holds.
        boundary = max(cut.rfind(" "), cut.rfind("\n"))
        cut = (cut[:boundary] if boundary > 0 else cut).rstrip()
        return cut, len(ids), len(tok.encode(cut, add_special_tokens=False))


@functools.lru_cache(maxsize=4)
def _load_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


class MaterialReader:
    """A picklable ``to_row`` for `inputs.read_records`: corpus record -> MATERIAL_SCHEMA row."""

    def __init__(self, classifier: UrlClassifier, truncator: Truncator, keep_unmatched: bool):
        self.classifier, self.truncator, self.keep_unmatched = classifier, truncator, keep_unmatched

    def __call__(self, record: Any, source: str) -> dict:
        row = {"material_id": stable_id("invalid", source), "material_type": "", "text": "", "url": "",
               "source": source, "truncated": False, "tokens_before": 0, "tokens_after": 0, "invalid": ""}
        problem = _material_problem(record)
        if problem:
            return {**row, "invalid": problem}
        text, url = record["text"].strip(), record["url"].strip()
        material_type = self.classifier.classify(url) or ("other" if self.keep_unmatched else "")
        kept, before, after = self.truncator(text)
        return {**row, "material_id": stable_id("material", text), "material_type": material_type, "text": kept,
                "url": url, "truncated": after < before, "tokens_before": before, "tokens_after": after}


def _material_problem(record: Any) -> str:
    if isinstance(record, Malformed):
        return record.reason
    if not isinstance(record, dict):
        return f"expected a JSON object with 'text' and 'url', got {type(record).__name__}"
    if not isinstance(record.get("text"), str) or not record["text"].strip():
        return "no non-empty 'text'"
    if not isinstance(record.get("url"), str) or not record["url"].strip():
        return "no non-empty 'url' (sector III sorts pieces by their URL)"
    return ""


# ------------------------------------------------------------------------------ loading, on the driver

_SHOWN_BAD_RECORDS = 20  # a file of millions of bad lines must not flood the log


@dataclass
class ConstructionInputs:
    meta_topics: list[str]
    entities: list[dict]  # valid, de-duplicated, in file order
    material_types: list[str]
    materials: Any  # Ray Dataset of the sampled sector-III pieces (MATERIAL_SCHEMA rows), or None
    resolved_model: str | None  # the construction LLM's local dir / hub id when it runs on vLLM
    templates: dict[str, str]  # the reference's sector-III templates (id -> template)
    stats: dict = field(default_factory=dict)


def load_inputs(config) -> ConstructionInputs:
    """Everything the first wave of calls derives from; every bad input is reported before any call."""
    from ultrachat.construction.reference import load_reference
    from ultrachat.models.source import resolve_model

    c = config.construction
    try:
        reference = load_reference(c.reference)
    except ValueError as err:
        raise ValueError(f"construction.reference: {err}") from err
    resolved = (resolve_model(c.llm.chat.model, key="construction.llm.chat.model")
                if c.llm.chat.backend == "vllm" else None)
    stats: dict = {}
    meta_topics = list(reference.meta_topics)[: c.I.topics.meta_topic_limit] if c.I and c.I.topics else []
    entities = _load_entities(c.I.entities, stats) if c.I and c.I.entities else []
    types = list(reference.material_types)[: c.II.material_type_limit] if c.II else []
    materials = None
    if c.III:
        unknown = [t for t in c.III.templates if t not in reference.templates]
        if unknown:
            raise ValueError(f"construction.III.templates: unknown template id {unknown[0]!r}; fix: use ids of the "
                             f"reference's templates ({', '.join(reference.templates)})")
        tokenizer = resolve_model(c.III.tokenizer, key="construction.III.tokenizer") if c.III.tokenizer else resolved
        materials = _load_materials(c.III, reference, tokenizer, c.seed, stats)
    stats.update(meta_topics=len(meta_topics), material_types=len(types))
    return ConstructionInputs(meta_topics, entities, types, materials, resolved, reference.templates, stats)


def _report_bad(kind: str, rows: list[dict]) -> None:
    for row in rows[:_SHOWN_BAD_RECORDS]:
        logger.warning("skipping %s record %s: %s", kind, row["source"], row["invalid"])
    if len(rows) > _SHOWN_BAD_RECORDS:
        logger.warning("... and %d more bad %s records", len(rows) - _SHOWN_BAD_RECORDS, kind)


def _load_entities(branch, stats: dict) -> list[dict]:
    key = "construction.I.entities.input.path"
    files = list_input_files(branch.input.path, branch.input.format, key, formats=("jsonl", "parquet", "text"))
    rows = sorted(read_records(files, entity_row).take_all(), key=lambda r: source_order(r["source"]))
    bad = [r for r in rows if r["invalid"]]
    _report_bad("entity", bad)
    entities, seen = [], set()
    for row in rows:
        if not row["invalid"] and row["name"] not in seen:
            seen.add(row["name"])
            entities.append(row)
    if not entities:
        first = f"; first: {bad[0]['source']}: {bad[0]['invalid']}" if bad else ""
        raise InputError(f"{key}: {branch.input.path} holds no valid entity records ({len(bad)} bad{first}). Fix: "
                         f"one JSON object per line with a 'name' (and an optional 'description'), or a .txt file "
                         f"with one name per line")
    used = entities[: branch.input.limit]
    stats["entities"] = {"records": len(rows), "invalid": len(bad), "duplicates": len(rows) - len(bad) - len(entities),
                         "used": len(used)}
    return used


def _load_materials(sector, reference, tokenizer: str | None, seed: int, stats: dict):
    import ray

    from ultrachat.construction.sampling import sample_evenly

    key = "construction.III.corpus.path"
    files = list_input_files(sector.corpus.path, sector.corpus.format, key)
    truncator = Truncator(sector.max_material_tokens, tokenizer)
    reader = MaterialReader(UrlClassifier.from_reference(reference), truncator, sector.unmatched == "other")
    materials = read_records(files, reader).materialize()
    columns = ["material_id", "material_type", "source", "invalid", "truncated"]
    rows = [r for batch in materials.select_columns(columns).iter_batches(batch_size=65536, batch_format="pyarrow")
            for r in batch.to_pylist()]
    rows.sort(key=lambda r: source_order(r["source"]))
    bad = [r for r in rows if r["invalid"]]
    _report_bad("corpus", bad)
    valid = [r for r in rows if not r["invalid"]][: sector.corpus.limit]
    if not valid:
        first = f"; first: {bad[0]['source']}: {bad[0]['invalid']}" if bad else ""
        raise InputError(f"{key}: {sector.corpus.path} holds no valid text pieces ({len(bad)} bad{first}). Fix: one "
                         f"JSON object (or Parquet row) per piece with 'text' and 'url'")
    unique: dict[str, dict] = {}
    for row in valid:
        unique.setdefault(row["material_id"], row)
    types = Counter(r["material_type"] for r in unique.values())
    unmatched = types.pop("", 0) + (types.pop("other", 0) if sector.unmatched == "other" else 0)
    if not types:
        logger.warning("%s: the URL keyword map matched none of the %d pieces (%d unmatched, %s). Fix: check the "
                       "url_keywords of the reference file (construction.reference) against your URLs, or set "
                       "construction.III.unmatched: other", key, len(unique), unmatched,
                       "kept as 'other'" if sector.unmatched == "other" else "dropped")
    eligible = [r for r in unique.values() if r["material_type"]]
    picked = sample_evenly([r["material_id"] for r in eligible], [(r["material_type"],) for r in eligible],
                           sector.pieces if sector.pieces is not None else len(eligible), seed)
    chosen = {eligible[i]["source"] for i in picked}  # sources are unique; equal texts share a material_id
    stats["materials"] = {
        "records": len(rows), "invalid": len(bad), "duplicates": len(valid) - len(unique),
        "matched": dict(sorted(types.items())), "unmatched": unmatched, "unmatched_policy": sector.unmatched,
        "truncated": sum(1 for r in unique.values() if r["truncated"]), "token_unit": truncator.unit,
        "budget": sector.max_material_tokens, "pieces_used": len(chosen)}
    logger.info("sector III pieces: %s", stats["materials"])
    return materials.map_batches(keep_rows, fn_kwargs={"column": "source", "wanted": [ray.put(chosen)]},
                                 batch_format="pyarrow")
