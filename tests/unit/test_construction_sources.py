"""Entities and C4-style pieces: record validation with file:line, URL classification, truncation."""

from ultrachat.construction.reference import load_reference
from ultrachat.construction.sources import MaterialReader, Truncator, entity_row
from ultrachat.construction.url_classifier import UrlClassifier
from ultrachat.inputs import Malformed, iter_file_records


def test_entity_records(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text('{"name": "Marie Curie", "description": "physicist"}\n{"nom": "x"}\nnot json\n'
                    '{"name": "Paris", "description": 3}\n"just a string"\n')
    rows = [entity_row(record, source) for source, record in iter_file_records(str(path), path.read_bytes())]
    assert rows[0] == {"name": "Marie Curie", "description": "physicist", "source": f"{path}:1", "invalid": ""}
    assert "no non-empty 'name'" in rows[1]["invalid"] and rows[1]["source"] == f"{path}:2"
    assert rows[2]["invalid"].startswith("malformed JSON")
    assert "'description' must be a string" in rows[3]["invalid"]
    assert rows[4]["name"] == "just a string"  # a bare JSON string is a name
    text = tmp_path / "e.txt"
    text.write_text("Mount Everest\n\nThe Nile\n")
    assert [(s, r) for s, r in iter_file_records(str(text), text.read_bytes())] == [
        (f"{text}:1", "Mount Everest"), (f"{text}:3", "The Nile")]


def reader(unmatched_other=False, budget=8, tokenizer=None):
    return MaterialReader(UrlClassifier.from_reference(load_reference()), Truncator(budget, tokenizer), unmatched_other)


def test_material_records_are_classified_truncated_or_flagged():
    row = reader()({"text": "Roses are red, violets are blue, sugar is sweet and so are you.",
                    "url": "https://example.com/poems/roses"}, "c4.jsonl:1")
    assert row["material_type"] == "Poems" and row["invalid"] == ""
    assert row["truncated"] and (row["tokens_before"], row["tokens_after"]) == (13, 8)
    assert row["text"] == "Roses are red, violets are blue, sugar is"
    unmatched = {"text": "Hello.", "url": "https://example.com/zzz"}
    assert reader()(unmatched, "c4.jsonl:2")["material_type"] == ""
    assert reader(unmatched_other=True)(unmatched, "c4.jsonl:2")["material_type"] == "other"
    assert "no non-empty 'url'" in reader()({"text": "x"}, "c4.jsonl:3")["invalid"]
    assert "no non-empty 'text'" in reader()({"text": " ", "url": "u"}, "c4.jsonl:4")["invalid"]
    assert reader()(Malformed("malformed JSON (x)"), "c4.jsonl:5")["invalid"] == "malformed JSON (x)"


def test_truncation_with_the_models_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = "The quick brown fox jumps over the lazy dog. " * 20
    kept, before, after = Truncator(16, str(tiny_model_dir))(text)
    assert before == len(tokenizer.encode(text, add_special_tokens=False)) > 16
    assert after <= 16 and text.startswith(kept) and not kept.endswith(" ")
    assert Truncator(10_000, str(tiny_model_dir))(text)[0] == text


def test_gzipped_json_lines_as_c4_ships_them(tmp_path):
    import gzip

    path = tmp_path / "c4-train.00000-of-01024.json.gz"
    path.write_bytes(gzip.compress(b'{"text": "A poem.", "url": "https://e.com/poems/1"}\nnot json\n'))
    records = list(iter_file_records(str(path), path.read_bytes()))
    assert records[0] == (f"{path}:1", {"text": "A poem.", "url": "https://e.com/poems/1"})
    assert records[1][0] == f"{path}:2" and isinstance(records[1][1], Malformed)
    (bad,) = iter_file_records(str(path), b"not gzip")
    assert bad[0] == f"{path}#file" and "unreadable gzip" in bad[1].reason
