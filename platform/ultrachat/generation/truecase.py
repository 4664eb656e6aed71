"""Truecasing of generated text, the ultrachat_200k cleanup (about 5% of UltraChat had errors like
"Hello. how are you?").

Deliberately conservative: it only upper-cases the first letter of an all-lowercase word that starts a
sentence (the turn's start, or after ". ", "! ", "? "), and the pronoun "i" ("i", "i'm",
"i've", "i'll", "i'd"). It never lower-cases anything and leaves alone:
- code (fenced ``` blocks and `inline` spans), URLs, e-mail addresses and paths;
- words with digits, inner capitals or underscores (iPhone, pH, mRNA, snake_case, x86);
- sentences after abbreviations (e.g., i.e., etc., vs., cf., approx.) or an ellipsis;
- line starts that follow no sentence end (poems, wrapped text, lowercase list items).
"""

from __future__ import annotations

import re

_CODE = re.compile(r"```.*?(?:```|\Z)|`[^`\n]*`", re.DOTALL)
_PROTECTED = re.compile(r"\b(?:https?://|www\.)\S+|\S+@\S+\.\w+|(?:^|\s)[./~][\w./-]+", re.IGNORECASE)
_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "cf.", "approx.", "al.", "no.", "fig.", "ca.", "resp.")
# A lowercase word at a sentence start: the turn's start, or after . ! ? (maybe a closing quote or
# bracket) and whitespace. A line break alone is no sentence end (poems, wrapped text, list items).
_SENTENCE_START = re.compile(r"(?:(?<=^)|(?<=[.!?][\"')\]]\s)|(?<=[.!?]\s))([a-z][a-z']*)\b")
# "i" alone or in i'm / i've / i'll / i'd; not "i.e.", "(i)" list numerals or "i." (too ambiguous).
_PRONOUN_I = re.compile(r"(?<![\w'(.-])i(?=(?:'m|'ve|'ll|'d)?(?![\w'.)-]))")


def _protected_spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in _CODE.finditer(text)] + [m.span() for m in _PROTECTED.finditer(text)]


def _inside(position: int, spans: list[tuple[int, int]]) -> bool:
    return any(start <= position < end for start, end in spans)


def _after_abbreviation_or_ellipsis(text: str, position: int) -> bool:
    before = text[:position].rstrip()
    if before.endswith(".."):
        return True
    last = before.rsplit(None, 1)[-1].lower() if before.split() else ""
    return last.endswith(_ABBREVIATIONS) or bool(re.fullmatch(r"[a-z]\.", last))  # "a. b." initials


def truecase(text: str) -> str:
    """``text`` with sentence starts and the pronoun "i" capitalized, by the rules above."""
    spans = _protected_spans(text)
    chars = list(text)
    for match in _SENTENCE_START.finditer(text):
        start = match.start(1)
        if _inside(start, spans) or _after_abbreviation_or_ellipsis(text, start):
            continue
        word_end = match.end(1)
        following = text[word_end:word_end + 1]
        if following and (following.isalnum() or following in "_@/") or re.match(r"\.\w", text[word_end:]):
            continue  # part of an identifier, a path or an abbreviation ("i.e.", "e.g.")
        chars[start] = chars[start].upper()
    for match in _PRONOUN_I.finditer(text):
        if not _inside(match.start(), spans):
            chars[match.start()] = "I"
    return "".join(chars)
