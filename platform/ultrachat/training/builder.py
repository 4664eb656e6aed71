"""The Ray Data stage that turns raw dialogue records into training rows, on the workers.

One ``ExampleBuilder`` actor per pool slot loads the tokenizer once (with the chat template chosen
before the job started) and, per batch of records: normalizes each dialogue (training/dialogues.py),
assigns it to the train or eval split by a hash of its content (so every piece of one dialogue lands
on the same side), splits it at round boundaries into examples of at most ``max_seq_len`` tokens
(training/examples.py) and, with packing, packs them (training/packing.py). Besides the example rows
it emits one ``stats`` row per batch, so the driver sums the skip and split counts without ever
holding the data.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter

import numpy as np

from ultrachat.inputs import Malformed
from ultrachat.training.dialogues import normalize_dialogue
from ultrachat.training.examples import SplitStats, dialogue_examples
from ultrachat.training.packing import pack_examples
from ultrachat.training.preference_pairs import SFT_LAYOUT, normalize_pair, pair_example

logger = logging.getLogger(__name__)

KIND_TRAIN, KIND_EVAL, KIND_STATS = "train", "eval", "stats"
SFT_LAYOUT_AT = "sft_layout_at@"  # stats key + the source of a batch's first SFT-layout record (method dpo)
_SAMPLED_ERRORS = 5  # malformed records logged per batch with their file:line; all are counted


def record_row(record, source: str) -> dict:
    """``inputs.read_records`` row: the record as JSON text (formats differ per file), or why not."""
    if isinstance(record, Malformed):
        return {"source": source, "record": None, "malformed": record.reason}
    return {"source": source, "record": json.dumps(record, default=str), "malformed": None}


def eval_bucket(messages: list[dict]) -> float:
    """A stable number in [0, 1) per dialogue content: the train/eval split key."""
    digest = hashlib.sha1(json.dumps(messages, sort_keys=True).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


_LIST_COLUMNS = {"sft": ("input_ids", "labels", "position_ids"),
                 "dpo": ("chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels")}


class ExampleBuilder:
    """map_batches callable: record rows in, example rows (and one stats row) out. ``method`` sft:
    dialogues -> examples (rows of ``input_ids``, ``labels``, ``position_ids``); dpo: preference
    records -> pairs (rows of chosen and rejected ids and labels, training/preference_pairs.py)."""

    def __init__(self, model_dir: str, chat_template: str, max_seq_len: int, packing: bool,
                 eval_fraction: float, data_format: str, method: str = "sft", max_prompt_length: int = 0):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.tokenizer.chat_template = chat_template
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None \
            else self.tokenizer.eos_token_id
        self.max_seq_len, self.packing = max_seq_len, packing
        self.eval_fraction, self.data_format = eval_fraction, data_format
        self.method, self.max_prompt_length = method, max_prompt_length

    def __call__(self, batch: dict) -> dict:
        counts: Counter = Counter()
        stats = SplitStats()
        examples: dict[str, list[dict]] = {KIND_TRAIN: [], KIND_EVAL: []}
        logged = 0
        for source, text, malformed in zip(batch["source"], batch["record"], batch["malformed"]):
            counts["records"] += 1
            if isinstance(malformed, str):  # None arrives as None or NaN depending on the block format
                counts["skipped_malformed"] += 1
                if logged < _SAMPLED_ERRORS:
                    logged += 1
                    logger.warning("%s: skipped, %s", source, malformed)
                continue
            record = json.loads(text)
            if self.method == "dpo":
                parsed, reason = normalize_pair(record)
            else:
                parsed, reason = normalize_dialogue(record, self.data_format)
            if parsed is None:
                counts[f"skipped_{reason}"] += 1
                if reason == SFT_LAYOUT and not any(k.startswith(SFT_LAYOUT_AT) for k in counts):
                    counts[SFT_LAYOUT_AT + source] = 1  # the driver's error names a place to look
                if reason != "status_not_kept" and logged < _SAMPLED_ERRORS:
                    logged += 1
                    logger.warning("%s: skipped, %s", source, reason.replace("_", " "))
                continue
            if self.method == "dpo":
                content = parsed["context"] + [{"chosen": parsed["chosen"], "rejected": parsed["rejected"]}]
                kind = KIND_EVAL if eval_bucket(content) < self.eval_fraction else KIND_TRAIN
                counts[f"{kind}_pairs"] += 1
                row = pair_example(self.tokenizer, parsed, self.max_seq_len, self.max_prompt_length, counts)
                examples[kind] += [row] if row else []
            else:
                kind = KIND_EVAL if eval_bucket(parsed) < self.eval_fraction else KIND_TRAIN
                counts[f"{kind}_dialogues"] += 1
                examples[kind] += dialogue_examples(self.tokenizer, parsed, self.max_seq_len, stats)
        counts.update(examples=stats.examples if self.method == "sft" else sum(map(len, examples.values())),
                      split_dialogues=stats.split_dialogues, truncated_rounds=stats.truncated_rounds,
                      skipped_no_trainable_tokens=stats.no_trainable_tokens)
        rows = [{"kind": kind, **row, "stats": None} for kind, items in examples.items() for row in self._rows(items)]
        counts.update({f"{kind}_rows": sum(r["kind"] == kind for r in rows) for kind in (KIND_TRAIN, KIND_EVAL)})
        counts["trainable_tokens"] = sum(sum(label != -100 for label in row[column])
                                         for row in rows for column in _LIST_COLUMNS[self.method]
                                         if column.endswith("labels"))
        rows.append({"kind": KIND_STATS, **{column: [] for column in _LIST_COLUMNS[self.method]}, "num_tokens": 0,
                     "stats": json.dumps(dict(counts))})
        return {key: _column([r[key] for r in rows]) for key in rows[0]}

    def _rows(self, items: list[dict]) -> list[dict]:
        if self.method == "dpo":
            return items
        if self.packing:
            return list(pack_examples(items, self.max_seq_len, self.pad_id))
        return [{"input_ids": e["input_ids"], "labels": e["labels"],
                 "position_ids": list(range(len(e["input_ids"]))), "num_tokens": len(e["input_ids"])}
                for e in items]


def _column(values: list) -> np.ndarray:
    if values and isinstance(values[0], list):
        out = np.empty(len(values), dtype=object)
        out[:] = [np.asarray(v, dtype=np.int32) for v in values]
        return out
    return np.asarray(values, dtype=object if not values or isinstance(values[0], (str, type(None))) else None)
