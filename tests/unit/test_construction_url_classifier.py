"""UrlClassifier: sorting C4 pieces into material types by URL keywords."""

import json
from importlib import resources

import pytest

from ultrachat.construction.reference import load_reference
from ultrachat.construction.url_classifier import UrlClassifier, url_target

UNMATCHED = {
    "https://www.example.com/about-us",
    "https://misc.example.org/page/4471",
    "https://www.example.net/index.php?id=22",
}


def _sample_c4() -> list[dict]:
    text = resources.files("ultrachat.data").joinpath("sample_c4.jsonl").read_text("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_sample_c4_records():
    records = _sample_c4()
    assert len(records) == 40
    for r in records:
        assert set(r) == {"url", "text"}
        assert 80 <= len(r["text"].split()) <= 250, r["url"]
        host = url_target(r["url"]).split("/")[0]
        assert host.endswith((".example.com", ".example.org", ".example.net")), r["url"]


def test_sample_c4_covers_material_types():
    ref = load_reference()
    clf = UrlClassifier.from_reference(ref)
    results = {r["url"]: clf.classify(r["url"]) for r in _sample_c4()}
    assert {u for u, t in results.items() if t is None} == UNMATCHED
    assert len({t for t in results.values() if t}) >= 12
    assert set(clf.stats.matched) <= set(ref.material_types)
    assert sum(clf.stats.matched.values()) == 37 and clf.stats.unmatched == 3
    assert clf.stats.as_dict()["unmatched"] == 3
    assert results["https://recipes.example.com/recipe/lemon-bars"] == "Recipes and Cooking Instructions"
    assert results["https://news.example.org/politics/city-council-budget-vote"] == "News Articles"
    assert results["https://github.example.com/tutorials/api/pagination"] == "Programs and Code"


def test_most_keywords_wins():
    clf = UrlClassifier({"A": ("learn",), "B": ("spanish", "dialogues")})
    assert clf.classify("https://x.example.com/learn/spanish/dialogues") == "B"
    assert clf.scores("https://x.example.com/learn/spanish/dialogues") == {"A": 1, "B": 2}


def test_ties_go_to_the_first_material_type():
    keywords = {"Poems": ("poem",), "Stories": ("story",)}
    assert UrlClassifier(keywords).classify("https://x.example.com/poem-or-story") == "Poems"
    # An explicit material_types order overrides the mapping's order.
    clf = UrlClassifier(keywords, material_types=["Stories", "Poems"])
    assert clf.classify("https://x.example.com/poem-or-story") == "Stories"


def test_word_keywords_match_whole_tokens_only():
    clf = UrlClassifier({"Art": ("art",), "Cover": ("cover-letter",)})
    assert clf.classify("https://x.example.com/start/party") is None
    assert clf.classify("https://x.example.com/art/gallery") == "Art"
    assert clf.classify("https://ART.example.com/Gallery") == "Art"  # case-insensitive
    assert clf.classify("https://x.example.com/my_cover_letter.html") == "Cover"  # run of tokens
    assert clf.classify("https://x.example.com/cover/the-letter") is None  # not consecutive


def test_substring_keywords():
    clf = UrlClassifier({"Recipes": ("/recipe/",), "Edu": (".edu",)})
    assert clf.classify("https://x.example.com/recipe/soup") == "Recipes"
    assert clf.classify("https://x.example.com/recipes/soup") is None  # '/recipe/' needs both slashes
    assert clf.classify("https://www.example.edu/lectures") == "Edu"


def test_query_and_fragment_are_ignored():
    clf = UrlClassifier({"News": ("news",)})
    assert clf.classify("https://x.example.com/page?ref=news#news") is None
    assert url_target("x.example.com/News/Item") == "x.example.com/news/item"  # no scheme is fine
    assert url_target("https://user@x.example.com:8080/a") == "x.example.com/a"


def test_stats_count_matches_and_misses():
    clf = UrlClassifier({"News": ("news",)})
    for url in ("https://news.example.com/a", "https://news.example.com/b", "https://x.example.com/c"):
        clf.classify(url)
    assert clf.stats.matched == {"News": 2} and clf.stats.unmatched == 1


def test_bad_keywords_raise_with_fix():
    with pytest.raises(ValueError, match="no letters or digits.*fix"):
        UrlClassifier({"News": ("--",)})
    with pytest.raises(ValueError, match="not in material_types.*fix"):
        UrlClassifier({"News": ("news",)}, material_types=["Poems"])
