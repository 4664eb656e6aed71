"""Sort C4 text pieces into the 20 material types by keywords in their URL (sector III, as in the paper).

Matching is on the lowercased host+path (query and fragment are tracking noise). A keyword containing
"/" or "." is a substring match ("/recipe/", ".edu"); any other keyword must match whole tokens of the
URL split on non-alphanumerics, so "art" does not fire on "start" and "cover-letter" needs "cover"
followed by "letter". The type with the most matching keywords wins; ties go to the type listed first.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

_TOKEN_SPLIT = re.compile(r"[^a-z0-9]+")


def _tokens(text: str) -> tuple[str, ...]:
    return tuple(t for t in _TOKEN_SPLIT.split(text.lower()) if t)


def url_target(url: str) -> str:
    """Lowercased host+path of `url`; bare "host/path" strings (no scheme) are accepted too."""
    raw = url.strip()
    parts = urlsplit(raw if "://" in raw or raw.startswith("//") else "//" + raw)
    return ((parts.hostname or "") + parts.path).lower()


@dataclass
class ClassifierStats:
    matched: Counter = field(default_factory=Counter)  # material type -> URLs classified as it
    unmatched: int = 0

    def as_dict(self) -> dict:
        return {"matched": dict(self.matched), "unmatched": self.unmatched}


class UrlClassifier:
    def __init__(self, url_keywords: Mapping[str, Sequence[str]], material_types: Sequence[str] | None = None):
        """`material_types` fixes the tie-break order; by default it is the order of `url_keywords`."""
        order = list(material_types) if material_types is not None else list(url_keywords)
        unknown = [t for t in url_keywords if t not in order]
        if unknown:
            raise ValueError(
                f"url_keywords has type {unknown[0]!r} that is not in material_types; "
                "fix: add it to material_types or remove its keyword list"
            )
        # (type, substring keywords, token-run keywords), in tie-break order.
        self._rules: list[tuple[str, tuple[str, ...], tuple[tuple[str, ...], ...]]] = []
        for mtype in order:
            subs: list[str] = []
            runs: list[tuple[str, ...]] = []
            for kw in dict.fromkeys(k.strip().lower() for k in url_keywords.get(mtype, ())):
                if "/" in kw or "." in kw:
                    subs.append(kw)
                elif _tokens(kw):
                    runs.append(_tokens(kw))
                else:
                    raise ValueError(
                        f"url_keywords[{mtype!r}] has keyword {kw!r} with no letters or digits; "
                        "fix: remove it, or write a URL fragment containing '/' or '.'"
                    )
            self._rules.append((mtype, tuple(subs), tuple(runs)))
        self.stats = ClassifierStats()

    @classmethod
    def from_reference(cls, reference) -> UrlClassifier:
        """A classifier for a `construction.reference.Reference` (its keywords and type order)."""
        return cls(reference.url_keywords, reference.material_types)

    def scores(self, url: str) -> dict[str, int]:
        """Number of matching keywords per material type (types with none are left out)."""
        target = url_target(url)
        tokens = _tokens(target)
        out: dict[str, int] = {}
        for mtype, subs, runs in self._rules:
            n = sum(1 for s in subs if s in target) + sum(1 for r in runs if _has_run(tokens, r))
            if n:
                out[mtype] = n
        return out

    def classify(self, url: str) -> str | None:
        """The best-matching material type for `url`, or None when no keyword matches."""
        scores = self.scores(url)
        if not scores:
            self.stats.unmatched += 1
            return None
        # dicts keep insertion (= tie-break) order and max() returns the first maximum.
        best = max(scores, key=scores.__getitem__)
        self.stats.matched[best] += 1
        return best


def _has_run(tokens: tuple[str, ...], run: tuple[str, ...]) -> bool:
    n = len(run)
    return any(tokens[i : i + n] == run for i in range(len(tokens) - n + 1))
