"""The paper's reference lists (meta-topics, material types, sector-III templates) plus our URL keywords.

The shipped lists live in `ultrachat/data/ultrachat_reference.yaml`; a user may pass a YAML file of the
same shape to replace them (e.g. their own url_keywords). Every problem raises ValueError naming the
file, the key and the fix, because these files are hand-edited.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ultrachat import storage

PACKAGED = "ultrachat_reference.yaml"
PLACEHOLDERS = ("{text}", "{instruction}")
KEYS = ("meta_topics", "material_types", "templates", "url_keywords")


@dataclass(frozen=True)
class Reference:
    meta_topics: tuple[str, ...]
    material_types: tuple[str, ...]
    templates: dict[str, str]  # template id (t1..t7) -> template with {text} and {instruction}
    url_keywords: dict[str, tuple[str, ...]]  # material type -> lowercase keywords / URL fragments


def load_reference(path: str | Path | None = None) -> Reference:
    """Load the packaged reference YAML, or the user's file at `path` (same shape) instead."""
    if path is None:
        source = f"packaged ultrachat/data/{PACKAGED}"
        text = resources.files("ultrachat.data").joinpath(PACKAGED).read_text("utf-8")
    else:
        source = str(path)
        try:
            text = storage.read_text(str(path))
        except OSError as exc:
            raise ValueError(f"{source}: cannot read reference file ({exc}); fix: pass an existing YAML file path") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: not valid YAML ({exc}); fix: correct the YAML syntax") from exc
    return _build(data, source)


def _fail(source: str, key: str, problem: str, fix: str) -> ValueError:
    return ValueError(f"{source}: key '{key}': {problem}; fix: {fix}")


def _build(data: Any, source: str) -> Reference:
    if not isinstance(data, dict):
        raise ValueError(f"{source}: top level must be a mapping with keys {', '.join(KEYS)}; fix: see the packaged {PACKAGED}")
    for key in KEYS:
        if key not in data:
            raise _fail(source, key, "missing", f"add '{key}:' (see the packaged {PACKAGED} for its shape)")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        # Catch typos like 'url_keyword' that would otherwise silently leave a list at its default.
        raise _fail(source, unknown[0], "unknown key", f"remove it or rename it to one of {', '.join(KEYS)}")
    meta_topics = _names(data["meta_topics"], source, "meta_topics")
    material_types = _names(data["material_types"], source, "material_types")
    templates = _templates(data["templates"], source)
    url_keywords = _url_keywords(data["url_keywords"], material_types, source)
    return Reference(meta_topics, material_types, templates, url_keywords)


def _names(value: Any, source: str, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise _fail(source, key, "must be a non-empty list of strings", f"write '{key}:' followed by '  - name' lines")
    names: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise _fail(source, f"{key}[{i}]", f"{item!r} is not a non-empty string", "quote the entry or remove it")
        if item.strip() in names:
            raise _fail(source, f"{key}[{i}]", f"duplicate entry {item!r}", "remove the repeated entry")
        names.append(item.strip())
    return tuple(names)


def _templates(value: Any, source: str) -> dict[str, str]:
    if not isinstance(value, dict) or not value:
        raise _fail(source, "templates", "must be a non-empty mapping of id -> template string", "write e.g. 't1: \"{text}\\n{instruction}\"'")
    templates: dict[str, str] = {}
    for tid, tpl in value.items():
        key = f"templates.{tid}"
        if not isinstance(tpl, str):
            raise _fail(source, key, f"{tpl!r} is not a string", "quote the template")
        missing = [p for p in PLACEHOLDERS if p not in tpl]
        if missing:
            raise _fail(source, key, f"template lacks {' and '.join(missing)}", "include both {text} and {instruction} in the template")
        try:
            # Any other brace would break str.format when the template is filled in later.
            tpl.format(text="", instruction="")
        except (KeyError, IndexError, ValueError) as exc:
            raise _fail(source, key, f"stray braces ({exc!r})", "double literal braces as {{ and }}") from exc
        templates[str(tid)] = tpl
    return templates


def _url_keywords(value: Any, material_types: tuple[str, ...], source: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict):
        raise _fail(source, "url_keywords", "must be a mapping of material type -> list of keywords", "write 'Poems: [poem, poetry]'")
    result: dict[str, tuple[str, ...]] = {}
    for mtype, words in value.items():
        key = f"url_keywords.{mtype}"
        if mtype not in material_types:
            raise _fail(source, key, "not one of material_types", "use a name listed under material_types exactly (case matters)")
        if not isinstance(words, list) or not words:
            raise _fail(source, key, "must be a non-empty list of keywords", "write e.g. '[poem, poetry, \"/poems/\"]'")
        cleaned: list[str] = []
        for w in words:
            if not isinstance(w, str) or not w.strip():
                raise _fail(source, key, f"keyword {w!r} is not a non-empty string", "quote it or remove it")
            # URLs are matched lowercased, so keywords are too; dedupe so a repeat cannot inflate a score.
            if w.strip().lower() not in cleaned:
                cleaned.append(w.strip().lower())
        result[mtype] = tuple(cleaned)
    return result
