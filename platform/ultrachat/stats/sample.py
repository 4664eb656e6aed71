"""The seeded samples behind topic diversity and coherence, and the caches that make re-runs free.

A dialogue's sample hash is a function of the seed and its content, so "the k smallest hashes" is a
uniform sample that a streaming pass can keep in O(k) memory, and the same data and seed always give
the same sample. Embeddings and judge scores are cached under ``output_dir/cache/<kind>/<model id>/``
by content key: a re-run, or a larger sample, pays only for dialogues not scored yet.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from ultrachat import storage
from ultrachat.secret_env import SecretEnv
from ultrachat.shards import read_column, write_shard

logger = logging.getLogger(__name__)

EMBEDDING_SCHEMA = pa.schema([("key", pa.string()), ("embedding", pa.list_(pa.float32()))])
JUDGE_SCHEMA = pa.schema([("key", pa.string()), ("score", pa.float64()), ("verdict", pa.string()),
                          ("error", pa.string())])
_CACHE_SHARD_ROWS = 5000


class BottomK:
    """The k candidates with the smallest (hash, key), merged batch by batch."""

    def __init__(self, k: int):
        self.k = k
        self.hashes = np.empty(0, dtype=np.uint64)
        self.keys = np.empty(0, dtype=object)
        self.chars = np.empty(0, dtype=np.int64)

    def add(self, hashes: np.ndarray, keys: list[str], chars: np.ndarray) -> None:
        self.hashes = np.concatenate([self.hashes, hashes])
        self.keys = np.concatenate([self.keys, np.array(keys, dtype=object)])
        self.chars = np.concatenate([self.chars, chars])
        if len(self.hashes) > 2 * self.k:  # prune in bulk: amortised O(1) per candidate
            self._prune()

    def _prune(self) -> None:
        order = np.lexsort((self.keys.astype(str), self.hashes))[: self.k]
        self.hashes, self.keys, self.chars = self.hashes[order], self.keys[order], self.chars[order]

    def sample(self) -> tuple[list[str], np.ndarray]:
        """The sampled content keys (a key repeats for identical dialogues) and their sizes."""
        if len(self.hashes):
            self._prune()
        return self.keys.tolist(), self.chars


def cache_dir(output_dir: str, kind: str, model_id: str) -> str:
    return storage.join(output_dir, "cache", kind, model_id)


def read_cache(directory: str, schema: pa.Schema) -> dict[str, dict]:
    table = read_column(directory, schema.names, schema)
    return {row["key"]: row for row in table.to_pylist()}


def write_cache(directory: str, rows: list[dict], schema: pa.Schema) -> None:
    for start in range(0, len(rows), _CACHE_SHARD_ROWS):
        write_shard(directory, pa.Table.from_pylist(rows[start:start + _CACHE_SHARD_ROWS], schema=schema), key="key")


def rows_with_keys(dataset, keys: set[str]):
    """The canonical rows whose content key is in ``keys`` (a second pass over the input); identical
    dialogues all pass, and the workers score each key once per batch."""
    import ray

    from ultrachat.inputs import keep_rows

    ref = ray.put(keys)
    return dataset.map_batches(keep_rows, fn_kwargs={"column": "key", "wanted": [ref]}, batch_format="pyarrow")


class EmbedWorker:
    """Ray Data callable class: canonical rows -> (key, embedding), one per distinct key."""

    def __init__(self, config, model_dir: str, secrets: SecretEnv):
        from ultrachat.stats.topic import make_encoder

        secrets.apply()  # an endpoint's API key (checked on the driver)
        self.encoder = make_encoder(config, model_dir)

    def __call__(self, batch: pa.Table) -> pa.Table:
        from ultrachat.stats.measure import render

        rows = list({row["key"]: row for row in batch.to_pylist()}.values())
        if not rows:
            return pa.table({"key": pa.array([], pa.string()), "embedding": pa.array([], pa.list_(pa.float32()))})
        vectors = self.encoder.embed([render(row["roles"], row["texts"]) for row in rows])
        return pa.Table.from_pylist([{"key": row["key"], "embedding": vector.tolist()}
                                     for row, vector in zip(rows, vectors)], schema=EMBEDDING_SCHEMA)


def judge_batch(batch: pa.Table, config, secrets: SecretEnv) -> pa.Table:
    """Ray Data batch function: canonical rows -> judge verdicts, one per distinct key."""
    from ultrachat.stats.judge import judge_dialogues

    secrets.apply()

    rows = list({row["key"]: row for row in batch.to_pylist()}.values())
    results = judge_dialogues(config, [(row["key"], row["roles"], row["texts"]) for row in rows]) if rows else []
    return pa.Table.from_pylist(results, schema=JUDGE_SCHEMA)
