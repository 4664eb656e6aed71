"""Pull a list of items (subtopics, questions, instructions) out of free-form LLM output.

Opening-line construction asks an LLM for "30 subtopics" or "10 questions"; models answer with JSON,
numbered or bulleted lists, or bare lines, often wrapped in prose. `parse_list` accepts all of these and
returns None when nothing list-like is found, which callers count as an unparseable reply.
"""

from __future__ import annotations

import ast
import json
import re

_FENCE = re.compile(r"```[a-zA-Z]*[ \t]*\n(.*?)```", re.S)
# Markers: "1." "1)" "(1)" "[1]" "Q1:" "Question 1:", optionally after a markdown heading ("### 1.").
_NUMBERED = re.compile(
    r"^(?:#{1,6}\s*)?(?:(?:\(\d{1,3}\)|\[\d{1,3}\]|\d{1,3}[.)])\s+|(?:q|question)\s*\d{1,3}\s*[:.)]\s*)(.*)$",
    re.I,
)
_BULLET = re.compile(r"^[-*•+–]\s+(.*)$")
# "**1.** text" / "**Q1:** text": bold around the marker itself.
_BOLD_MARKER = re.compile(r"^(\*\*|__)((?:q|question)?\s*\d{1,3}[.):])(\*\*|__)\s*", re.I)
# Generic labels models put before each item; they carry no content ("1. **Question:** What is...").
_LABEL = re.compile(
    r"^(?:question|q|instruction|topic|sub-?topic|task|prompt|query|request)\s*\d{0,3}\s*:\s*", re.I
)
# Chatty lines models put around a list; dropped at the start/end when lines are bare (unmarked).
_PROSE = re.compile(
    r"^(?:here (?:are|is)|sure|certainly|of course|okay|ok\b|below|the following|i hope|hope (?:this|these|that)"
    r"|let me know|feel free|note:|these (?:are|questions|topics)|i(?:'m| am) sorry|sorry|as an ai|i can(?:not|'t))",
    re.I,
)
_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’", "`": "`"}
_MAX_BARE_WORDS = 80  # a bare "line item" longer than this is a paragraph, not an item


def parse_list(text: str, min_items: int = 1) -> list[str] | None:
    """Items found in `text` (cleaned, exact repeats removed, order kept), or None if fewer than min_items."""
    if not isinstance(text, str) or not text.strip():
        return None
    for strategy in (_from_json, _from_lines):
        items = strategy(text)
        if items is not None:
            items = _dedupe(_clean(i) for i in items)
            # A strategy that found a list decides: falling through would re-read the same text as prose.
            return items if len(items) >= max(min_items, 1) else None
    return None


def _from_json(text: str) -> list[str] | None:
    """The first JSON (or Python-literal) array of strings: in a code fence, or anywhere in the text."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for chunk in candidates:
        for start in (m.start() for m in re.finditer(r"\[", chunk)):
            try:
                value, end = decoder.raw_decode(chunk, start)
            except (ValueError, RecursionError):
                value, end = _python_literal(chunk, start)
            items = _strings(value)
            # An array inside a numbered/bulleted list is part of an item (a code question), not the answer.
            if items and _marked_items((chunk[:start] + "\n" + chunk[end:]).splitlines()) is None:
                return items
    return None


def _python_literal(chunk: str, start: int) -> tuple[object, int]:
    # Models sometimes print a Python list (single quotes), which JSON rejects. Only try arrays that
    # open with a quoted string, which keeps this cheap and off "[citation]"-style brackets.
    end = chunk.rfind("]") + 1
    if end <= start or chunk[start + 1 :].lstrip()[:1] not in ("'", '"'):
        return None, end
    try:
        return ast.literal_eval(chunk[start:end]), end
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None, end


def _strings(value: object) -> list[str] | None:
    """String items of a decoded array; objects like {"question": "..."} give their first string value."""
    if not isinstance(value, list):
        return None
    out: list[str] = []
    for item in value:
        if isinstance(item, dict):
            item = next((v for v in item.values() if isinstance(v, str)), None)
        if isinstance(item, str):
            out.append(item)
    # Arrays of numbers ("see [1]") are citations, not item lists.
    return out or None


def _from_lines(text: str) -> list[str] | None:
    lines = [ln.rstrip() for ln in text.splitlines()]
    marked = _marked_items(lines)
    if marked is not None:
        return marked
    return _bare_items(lines)


def _marked_items(lines: list[str]) -> list[str] | None:
    """Items of the top-level numbered or bulleted list; deeper-indented sub-items and prose are ignored."""
    found: list[tuple[int, str, str]] = []  # (indent, kind, item text)
    for raw in lines:
        body = _BOLD_MARKER.sub(r"\2 ", raw.strip())
        indent = len(raw) - len(raw.lstrip())
        for kind, pattern in (("numbered", _NUMBERED), ("bullet", _BULLET)):
            m = pattern.match(body)
            if m:
                found.append((indent, kind, m.group(1)))
                break
    if not found:
        return None
    top = min(indent for indent, _, _ in found)
    kinds = {kind for indent, kind, _ in found if indent == top}
    # Bullets under numbered headings are usually sub-items even when not indented.
    kind = "numbered" if "numbered" in kinds else "bullet"
    return [item for indent, k, item in found if indent == top and k == kind]


def _bare_items(lines: list[str]) -> list[str] | None:
    """One item per line, when the non-empty lines look like items rather than a paragraph."""
    rows = [ln.strip() for ln in lines]
    rows = [r for r in rows if r and not r.startswith("```") and re.search(r"\w", r)]
    while rows and (rows[0].endswith(":") or _PROSE.match(rows[0])):
        rows.pop(0)
    while rows and _PROSE.match(rows[-1]):
        rows.pop()
    if len(rows) < 2 or any(len(r.split()) > _MAX_BARE_WORDS or r.endswith(":") for r in rows):
        return None
    return rows


def _clean(item: str) -> str:
    s = item.strip()
    if s.endswith(",") and s[:1] in _QUOTES:
        s = s[:-1].rstrip()  # a line of a broken JSON array: "item",
    s = s.replace("**", "")
    s = _unwrap(s)
    s = _LABEL.sub("", s).strip()
    return _unwrap(s)


def _unwrap(s: str) -> str:
    """Remove one pair of surrounding quotes or italics markers, repeatedly ("'x'" -> x)."""
    s = s.strip()
    while len(s) >= 2:
        first, last = s[0], s[-1]
        if _QUOTES.get(first) == last or (first in "*_" and last == first):
            s = s[1:-1].strip()
        else:
            break
    if s[:1] in ('"', "“") and _QUOTES[s[0]] not in s[1:]:
        s = s[1:].strip()  # the last item of a reply cut off mid-string: "item...
    return s


def _dedupe(items) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for item in items:
        if item and item not in seen:
            seen.add(item)
            out.append(item)
    return out
