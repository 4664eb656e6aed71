"""Packing several examples into one sequence, attention kept within each example.

Each packed row is examples laid end to end with ``position_ids`` restarting at 0 for every example.
Given ``position_ids`` and no 2D attention mask, transformers (masking_utils: packed-sequence
detection) builds a block-diagonal causal mask, for SDPA and eager attention alike, but only when the
forward pass has no KV cache: call the model with ``use_cache=False`` (a cache turns the detection
off, and the examples would silently attend to each other). Then no token sees
another example and positions (RoPE) are as if each example were alone. The first label of every
example is -100, so nothing is trained across a boundary.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ultrachat.training.examples import IGNORE_INDEX


def pack_examples(examples: Iterable[dict], max_seq_len: int, pad_id: int, open_rows: int = 8) -> Iterator[dict]:
    """First-fit packing over a few open rows (streaming, bounded memory): each example goes into the
    first open row with room; when all ``open_rows`` are too full for it, the fullest row is emitted.
    Rows are exactly ``max_seq_len`` tokens (tail padded). Example order is not kept (training shuffles)."""
    rows: list[dict[str, list[int]]] = []
    for example in examples:
        n = len(example["input_ids"])
        if n > max_seq_len:
            raise ValueError(f"an example of {n} tokens exceeds max_seq_len {max_seq_len}; split it first "
                             f"(training/examples.py)")
        row = next((r for r in rows if len(r["input_ids"]) + n <= max_seq_len), None)
        if row is None:
            if len(rows) == open_rows:
                fullest = max(rows, key=lambda r: len(r["input_ids"]))
                rows.remove(fullest)
                yield _padded(fullest, max_seq_len, pad_id)
            row = {"input_ids": [], "labels": [], "position_ids": []}
            rows.append(row)
        row["input_ids"] += example["input_ids"]
        row["labels"] += [IGNORE_INDEX] + example["labels"][1:]
        row["position_ids"] += list(range(n))
    for row in rows:
        yield _padded(row, max_seq_len, pad_id)


def _padded(row: dict, max_seq_len: int, pad_id: int) -> dict:
    missing = max_seq_len - len(row["input_ids"])
    return {"input_ids": row["input_ids"] + [pad_id] * missing,
            "labels": row["labels"] + [IGNORE_INDEX] * missing,
            # Padding is its own "example" (positions restart), so real tokens never attend to it.
            "position_ids": row["position_ids"] + list(range(missing)),
            "num_tokens": len(row["input_ids"])}


def pad_batch(examples: list[dict], max_seq_len: int, pad_id: int) -> list[dict]:
    """Unpacked: one example per row, padded to ``max_seq_len`` (the baseline packing is measured against)."""
    return [_padded({"input_ids": list(e["input_ids"]), "labels": list(e["labels"]),
                     "position_ids": list(range(len(e["input_ids"])))}, max_seq_len, pad_id) for e in examples]


def non_padding_fraction(rows: list[dict]) -> float:
    total = sum(len(r["input_ids"]) for r in rows)
    return sum(r["num_tokens"] for r in rows) / total if total else 0.0
