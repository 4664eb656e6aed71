"""The shipped UltraChat reference lists, the user-override YAML and its validation errors."""

import dataclasses
import json
import re
from importlib import resources
from pathlib import Path

import pytest
import yaml

from ultrachat.construction.reference import Reference, load_reference

DOC = Path(__file__).resolve().parents[2].parent / "shared" / "ultrachat-reference.md"


def _doc_list(doc: str, label: str) -> list[str]:
    """A 'The 30 meta-topics: A; B; ... Z.' paragraph of the reference doc, as a list."""
    m = re.search(rf"{re.escape(label)}:(.*?)\.\n", doc, re.S)
    assert m, f"cannot find '{label}' in {DOC}"
    return [part.strip() for part in " ".join(m.group(1).split()).split(";")]


def _doc_templates(doc: str) -> list[str]:
    block = doc.split("The templates:", 1)[1].split("\n\n", 1)[0]
    return [t.replace("\\n", "\n") for t in re.findall(r"^\s*- `(.*)`\s*$", block, re.M)]


def test_shipped_reference_shape():
    ref = load_reference()
    assert isinstance(ref, Reference)
    assert len(ref.meta_topics) == 30 and len(set(ref.meta_topics)) == 30
    assert len(ref.material_types) == 20 and len(set(ref.material_types)) == 20
    assert list(ref.templates) == [f"t{i}" for i in range(1, 8)]
    for tpl in ref.templates.values():
        assert "{text}" in tpl and "{instruction}" in tpl
        assert tpl.format(text="T", instruction="I")  # no stray braces
    # Every material type has keywords (sector III sorts C4 pieces into all 20), all lowercase.
    assert list(ref.url_keywords) == list(ref.material_types)
    for words in ref.url_keywords.values():
        assert words and all(w == w.lower() and w.strip() for w in words)


def test_shipped_reference_matches_the_paper_lists():
    if not DOC.exists():
        pytest.skip(f"{DOC} not present")
    doc = DOC.read_text("utf-8")
    ref = load_reference()
    assert list(ref.meta_topics) == _doc_list(doc, "The 30 meta-topics")
    assert list(ref.material_types) == _doc_list(doc, "The 20 material types")
    assert list(ref.templates.values()) == _doc_templates(doc)


def test_reference_is_frozen():
    ref = load_reference()
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.meta_topics = ()


def test_package_data_is_shipped():
    data = resources.files("ultrachat.data")
    for name in ("ultrachat_reference.yaml", "sample_entities.jsonl", "sample_c4.jsonl"):
        assert data.joinpath(name).is_file(), name


def test_sample_entities():
    text = resources.files("ultrachat.data").joinpath("sample_entities.jsonl").read_text("utf-8")
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert len(records) == 30
    assert len({r["name"] for r in records}) == 30
    for r in records:
        assert set(r) == {"name", "description"} and r["name"].strip() and len(r["description"].split()) >= 8


# --- user-supplied YAML ---------------------------------------------------------------------------------


def _shipped_data() -> dict:
    return yaml.safe_load(resources.files("ultrachat.data").joinpath("ultrachat_reference.yaml").read_text("utf-8"))


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "my_reference.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False), "utf-8")
    return path


def test_user_yaml_replaces_lists(tmp_path):
    data = {
        "meta_topics": ["Astronomy", "Gardening"],
        "material_types": ["Poems", "Recipes"],
        "templates": {"a": "{instruction}\n\n{text}"},
        "url_keywords": {"Recipes": ["Recipe", "/Cook/", "recipe"]},
    }
    ref = load_reference(str(_write(tmp_path, data)))
    assert ref.meta_topics == ("Astronomy", "Gardening")
    assert ref.material_types == ("Poems", "Recipes")
    assert ref.templates == {"a": "{instruction}\n\n{text}"}
    assert ref.url_keywords == {"Recipes": ("recipe", "/cook/")}  # lowercased, repeats dropped


def _break(data: dict, how: str) -> dict | str:
    if how == "missing":
        del data["templates"]
    elif how == "placeholder":
        data["templates"]["t3"] = "{instruction} Answer according to the text."
    elif how == "stray_brace":
        data["templates"]["t2"] = "{text} {instruction} {extra}"
    elif how == "unknown_type":
        data["url_keywords"]["Limericks"] = ["limerick"]
    elif how == "unknown_key":
        data["url_keyword"] = {}
    elif how == "duplicate":
        data["meta_topics"].append("Technology")
    elif how == "empty_list":
        data["material_types"] = []
    elif how == "bad_keyword":
        data["url_keywords"]["Poems"] = ["poem", ""]
    elif how == "not_mapping":
        return "- just\n- a list\n"
    elif how == "bad_yaml":
        return "meta_topics: [unclosed\n"
    return data


@pytest.mark.parametrize(
    "how, key",
    [
        ("missing", "templates"),
        ("placeholder", "templates.t3"),
        ("stray_brace", "templates.t2"),
        ("unknown_type", "url_keywords.Limericks"),
        ("unknown_key", "url_keyword"),
        ("duplicate", "meta_topics[30]"),
        ("empty_list", "material_types"),
        ("bad_keyword", "url_keywords.Poems"),
        ("not_mapping", "top level"),
        ("bad_yaml", "not valid YAML"),
    ],
)
def test_bad_user_yaml_names_file_key_and_fix(tmp_path, how, key):
    path = _write(tmp_path, _break(_shipped_data(), how))
    with pytest.raises(ValueError) as err:
        load_reference(path)
    message = str(err.value)
    assert str(path) in message and key in message and "fix" in message


def test_missing_user_file(tmp_path):
    with pytest.raises(ValueError, match="cannot read reference file.*fix"):
        load_reference(tmp_path / "nope.yaml")
