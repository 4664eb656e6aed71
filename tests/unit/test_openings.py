"""Opening-line parsing: every input line becomes exactly one row, valid or invalid with its place."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ultrachat.config.generation import OpeningsInput
from ultrachat.generation.openings import list_input_files, normalize
from ultrachat.inputs import iter_file_records
from ultrachat.ids import stable_id


def _parse_file(row: dict) -> list[dict]:
    return [normalize(record, source) for source, record in iter_file_records(row["path"], row["bytes"])]


def test_jsonl_lines_are_parsed_with_file_and_line_numbers(tmp_path):
    path = tmp_path / "o.jsonl"
    path.write_text('{"text": "Hi?", "topic": "x"}\n\nnot json\n{"messages": [{"role": "user", "content": "Yo"}],'
                    ' "sector": 2}\n{"text": "  "}\n{"id": 7, "text": "Seven", "sector": "III"}\n')
    rows = list(_parse_file({"path": str(path), "bytes": path.read_bytes()}))
    assert [r["source"] for r in rows] == [f"{path}:{n}" for n in (1, 3, 4, 5, 6)]
    assert rows[0]["id"] == stable_id("I", "Hi?") and json.loads(rows[0]["provenance"]) == {"topic": "x"}
    assert rows[1]["invalid"].startswith("malformed JSON")
    assert (rows[2]["text"], rows[2]["sector"]) == ("Yo", "II")
    assert "no non-empty 'text'" in rows[3]["invalid"]
    assert (rows[4]["id"], rows[4]["sector"]) == ("7", "III")


def test_parquet_rows_and_corrupt_files(tmp_path):
    path = tmp_path / "o.parquet"
    pq.write_table(pa.Table.from_pylist([{"text": "A?", "sector": "I"}, {"text": None, "sector": "I"}]), path)
    rows = list(_parse_file({"path": str(path), "bytes": path.read_bytes()}))
    assert [r["source"] for r in rows] == [f"{path}#0", f"{path}#1"] and rows[1]["invalid"]
    (bad,) = _parse_file({"path": str(tmp_path / "x.parquet"), "bytes": b"garbage"})
    assert bad["invalid"].startswith("unreadable Parquet file")


def test_unknown_sector_is_invalid_not_a_crash():
    assert "sector 'IV'" in normalize({"text": "x", "sector": "IV"}, "f:1")["invalid"]
    assert "JSON object" in normalize(["x"], "f:1")["invalid"]


def test_listing_files_and_uris(tmp_path):
    (tmp_path / "a.jsonl").write_text("{}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.parquet").write_bytes(b"")
    (tmp_path / ".hidden.jsonl").write_text("{}\n")
    (tmp_path / "notes.txt").write_text("x")
    files = list_input_files(OpeningsInput(path=str(tmp_path)))
    assert files == [str(tmp_path / "a.jsonl"), str(tmp_path / "sub" / "b.parquet")]
    files = list_input_files(OpeningsInput(path=f"file://{tmp_path}", format="jsonl"))
    assert files == [f"file://{tmp_path}/a.jsonl"]


def test_provenance_of_built_openings_is_merged_not_nested():
    row = normalize({"text": "Q?", "sector": "I", "provenance": '{"meta_topic": "Technology"}', "source": "x"}, "f#0")
    assert json.loads(row["provenance"]) == {"meta_topic": "Technology", "source": "x"}


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing.jsonl", "does not exist"),
    (lambda p: p, "no .jsonl / .json / .ndjson / .jsonl.gz / .json.gz / .parquet files"),
])
def test_missing_or_empty_inputs_are_clear_errors(tmp_path, make, message):
    with pytest.raises(ValueError, match=message):
        list_input_files(OpeningsInput(path=str(make(tmp_path))))
