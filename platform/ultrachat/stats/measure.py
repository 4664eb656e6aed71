"""The per-dialogue metrics, computed in a Ray Data actor pool, one mergeable aggregate per batch.

Definitions (the paper leaves tokenizer and averaging open; report.md states these):
- rounds: assistant replies (a trailing user message without a reply is counted apart);
- utterance length: tokens of one message's text by the configured HF tokenizer, no special tokens,
  no chat template; dialogue length: the sum over its messages; averages are over messages and over
  dialogues respectively;
- MTLD: LexicalRichness(text).mtld(threshold) (bidirectional, the paper's package) per message, mean
  over messages (the paper's column) plus the median, and once per dialogue on its joined text.

Besides the aggregate, each batch returns its sample candidates (a seeded hash per dialogue, so the
driver keeps the k smallest: a uniform sample without knowing the count) and writes its dialogues'
duplicate keys to a work folder, so neither passes through the driver's memory.
"""

from __future__ import annotations

import hashlib
import logging
import pickle

import numpy as np
import pyarrow as pa

from ultrachat.stats.aggregate import Aggregate

logger = logging.getLogger(__name__)

KEYS_SCHEMA = pa.schema([
    ("key", pa.string()), ("order", pa.uint64()),
    ("opening_exact", pa.int64()), ("opening_near", pa.int64()), ("opening_bands", pa.list_(pa.int64())),
    ("dialogue_exact", pa.int64()), ("dialogue_near", pa.int64()), ("dialogue_bands", pa.list_(pa.int64())),
])


def sample_hash(salt: str, seed: int, key: str) -> int:
    digest = hashlib.blake2b(f"{salt}:{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def mtld(text: str, threshold: float) -> float | None:
    """LexicalRichness's MTLD, or None when the text has no word its tokenizer keeps (empty, digits only)."""
    from lexicalrichness import LexicalRichness

    try:
        return float(LexicalRichness(text).mtld(threshold=threshold))
    except ZeroDivisionError:
        return None


def render(roles: list[str], texts: list[str]) -> str:
    """A dialogue as one text (for embedding and judging)."""
    return "\n\n".join(f"{role.capitalize()}: {text}" for role, text in zip(roles, texts))


class Candidates:
    """Per-batch sample candidates: (hash, content key, characters) of the dialogues in `overall`."""

    def __init__(self):
        self.hashes, self.keys, self.chars = [], [], []

    def add(self, hashed: int, key: str, chars: int) -> None:
        self.hashes.append(hashed)
        self.keys.append(key)
        self.chars.append(chars)


class DialogueMeter:
    """Ray Data callable class: canonical rows in, one row holding the batch's pickled results out."""

    def __init__(self, tokenizer_path: str | None, threshold: float, overall_statuses: list[str],
                 sample_seeds: dict[str, int], keys_dir: str | None, minhash: dict | None):
        from transformers import AutoTokenizer

        from ultrachat.construction.dedup import MinHasher

        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path) if tokenizer_path else None
        self.threshold = threshold
        self.overall = set(overall_statuses)
        self.seeds = sample_seeds  # sample name ("topic", "judge") -> its seed, for the samples taken
        self.keys_dir = keys_dir
        self.minhasher = MinHasher(**minhash) if minhash else None

    def __call__(self, batch: pa.Table) -> dict:
        aggregate = Aggregate()
        candidates = {name: Candidates() for name in self.seeds}
        rows = batch.to_pylist()
        aggregate.rows = len(rows)
        valid = [row for row in rows if not row["problem"]]
        for row in rows:
            if row["problem"]:
                aggregate.add_problem(row["problem"], row["source"], row["status"])
        tokens = self._token_counts(valid)
        key_rows = []
        for row, counts in zip(valid, tokens):
            measured = self._measure(row, counts)
            in_overall = row["status"] is None or row["status"] in self.overall
            if row["status"] is not None:
                aggregate.group(f"status:{row['status']}").add(measured)
            if not in_overall:
                continue
            aggregate.group("overall").add(measured)
            if row["sector"] is not None:
                aggregate.group(f"sector:{row['sector']}").add(measured)
            chars = sum(len(t) for t in row["texts"])
            for name, found in candidates.items():
                found.add(sample_hash(name, self.seeds[name], row["key"]), row["key"], chars)
            if self.minhasher is not None:
                key_rows.append(self._duplicate_keys(row))
        if key_rows:
            from ultrachat.shards import write_shard

            write_shard(self.keys_dir, pa.Table.from_pylist(key_rows, schema=KEYS_SCHEMA), key="key")
        result = {"aggregate": aggregate,
                  "candidates": {name: (np.array(c.hashes, dtype=np.uint64), c.keys, np.array(c.chars, dtype=np.int64))
                                 for name, c in candidates.items()}}
        return {"result": [pickle.dumps(result, protocol=5)]}

    def _token_counts(self, rows: list[dict]) -> list[list[int]]:
        texts = [text for row in rows for text in row["texts"]]
        if self.tokenizer is None or not texts:  # a plan-only pass measures no lengths
            return [[0] * len(row["texts"]) for row in rows]
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        counts, start = [], 0
        for row in rows:
            counts.append([len(i) for i in ids[start:start + len(row["texts"])]])
            start += len(row["texts"])
        return counts

    def _measure(self, row: dict, tokens: list[int]) -> dict:
        roles, texts = row["roles"], row["texts"]
        if self.tokenizer is None:
            scores, whole = [None] * len(texts), None
        else:
            scores = [mtld(text, self.threshold) for text in texts]
            whole = mtld("\n".join(texts), self.threshold)
        return {"roles": roles, "tokens": tokens, "mtld": scores, "mtld_dialogue": whole,
                "rounds": roles.count("assistant"), "system_messages": row["system_messages"]}

    def _duplicate_keys(self, row: dict) -> dict:
        from ultrachat.construction.dedup import exact_key, near_key

        opening = row["texts"][row["roles"].index("user")]
        dialogue = "\n".join(row["texts"])
        out = {"key": row["key"], "order": sample_hash("order", 0, row["key"])}  # same data, same order
        for name, text in (("opening", opening), ("dialogue", dialogue)):
            out[f"{name}_exact"] = exact_key(text)
            out[f"{name}_near"] = near_key(text)
            out[f"{name}_bands"] = self.minhasher.band_keys(text).tolist()
        return out


def duplicate_shares(keys_dir: str) -> dict:
    """Share of dialogues (in `overall`) whose opening / whole text duplicates an earlier one, by rule.

    Runs as a Ray task beside the data, not on the driver: it holds 36 int64 keys per dialogue
    (~0.4 GB at 1.5M dialogues). "Earlier" is a fixed pseudo-random order, so a re-run agrees.
    """
    import pyarrow.dataset as ds

    from ultrachat.construction.dedup import dedup_mask
    from ultrachat.shards import shard_paths
    from ultrachat.storage import filesystem_for

    paths = shard_paths(keys_dir)
    if not paths:
        return {}
    filesystem, _ = filesystem_for(keys_dir)
    table = ds.dataset(paths, format="parquet", filesystem=filesystem, schema=KEYS_SCHEMA).to_table()
    table = table.sort_by([("order", "ascending"), ("key", "ascending")])
    shares = {"dialogues": table.num_rows}
    for name in ("opening", "dialogue"):
        bands = np.array(table.column(f"{name}_bands").to_pylist(), dtype=np.int64)
        keep, counts = dedup_mask(table.column(f"{name}_exact").to_numpy(), table.column(f"{name}_near").to_numpy(),
                                  bands)
        removed = int((~keep).sum())
        shares[name] = {"duplicates": removed, "share": round(removed / max(1, table.num_rows), 4),
                        "by_rule": counts.as_dict()}
    return shares
