"""Shard clean-up after retries: one record per key survives, whatever the retry's outcome."""

import pyarrow as pa
import pyarrow.parquet as pq

from ultrachat.construction.records import RESULT_SCHEMA
from ultrachat.shards import drop_superseded_failures, read_column


def rows(*records):
    base = {name: None for name in RESULT_SCHEMA.names}
    return pa.Table.from_pylist([{**base, "items": [], **r} for r in records], schema=RESULT_SCHEMA)


def test_retried_keys_keep_their_newest_success_else_their_newest_failure(tmp_path):
    pq.write_table(rows({"call_id": "a", "status": "failed:http_500", "started_at": 1.0},
                        {"call_id": "b", "status": "failed:unparseable", "started_at": 1.0},
                        {"call_id": "c", "status": "failed:unparseable", "started_at": 1.0}), tmp_path / "part-1.parquet")
    pq.write_table(rows({"call_id": "a", "status": "ok", "started_at": 2.0},
                        {"call_id": "b", "status": "failed:unparseable", "started_at": 2.0}), tmp_path / "part-2.parquet")
    removed = drop_superseded_failures(str(tmp_path), {"a", "b"}, RESULT_SCHEMA, key="call_id")
    table = read_column(str(tmp_path), ["call_id", "status", "started_at"], RESULT_SCHEMA)
    kept = sorted(zip(*(table.column(c).to_pylist() for c in ("call_id", "status", "started_at"))))
    assert removed == 2
    # a: the success; b: the newer of its two failures; c was not retried, so it is left alone.
    assert kept == [("a", "ok", 2.0), ("b", "failed:unparseable", 2.0), ("c", "failed:unparseable", 1.0)]
    assert drop_superseded_failures(str(tmp_path), {"a", "b"}, RESULT_SCHEMA, key="call_id") == 0
