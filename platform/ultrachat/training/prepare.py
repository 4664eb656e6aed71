"""Preparing the training data once per content: dialogue files -> tokenized example rows on storage.

A Ray Data pass (read the files -> ``ExampleBuilder`` actors -> Parquet under
``output_dir/prepared/<fingerprint>/kind=train|eval``) that runs before any training worker starts,
so an empty data set, one where nothing fits ``max_seq_len``, or too few examples for the workers
fail early with the counts that explain why. The fingerprint covers the input files (path, size,
mtime), the tokenizer, the chat template and every setting that changes the rows, so a re-run reuses
the prepared rows and any change prepares them afresh. The training workers then stream these rows
(``get_dataset_shard``); nothing passes through the driver but the per-batch counts.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ultrachat import storage
from ultrachat.config.training import TrainStage
from ultrachat.errors import InputError
from ultrachat.inputs import list_input_files, read_records
from ultrachat.observability import dataset_name, named
from ultrachat.training.builder import (KIND_EVAL, KIND_STATS, KIND_TRAIN, SFT_LAYOUT_AT, ExampleBuilder,
                                        record_row)
from ultrachat.training.preference_pairs import SFT_LAYOUT

logger = logging.getLogger(__name__)

PREPARED_DIR = "prepared"
MANIFEST = "_manifest.json"
_VERSION = 1  # bump when the row layout changes, so old prepared rows are never reused
_BATCH_RECORDS = 128


@dataclass(frozen=True)
class PreparedData:
    root: str
    fingerprint: str
    train_rows: int
    eval_rows: int
    counts: Counter  # missing counts are 0

    @property
    def train_dir(self) -> str:
        return storage.join(self.root, f"kind={KIND_TRAIN}")

    @property
    def eval_dir(self) -> str | None:
        return storage.join(self.root, f"kind={KIND_EVAL}") if self.eval_rows else None


def data_files(stage: TrainStage) -> list[str]:
    files: list[str] = []
    for index, path in enumerate(stage.data.paths):
        files += list_input_files(path, "auto", key=f"data.paths[{index}]")
    return files


def fingerprint(stage: TrainStage, files: list[str], model_dir: str, chat_template: str) -> str:
    described = []
    for path in files:
        filesystem, inner = storage.filesystem_for(path)
        info = filesystem.get_file_info(inner)
        described.append([path, info.size, info.mtime_ns])
    tokenizer_files = sorted(p for p in Path(model_dir).glob("tokenizer*") if p.is_file()) \
        if Path(model_dir).is_dir() else []
    key = {"version": _VERSION, "files": described, "template": chat_template, "model": model_dir,
           "tokenizer": [hashlib.sha1(p.read_bytes()).hexdigest() for p in tokenizer_files],
           "data": stage.data.model_dump(exclude={"paths"}), "max_seq_len": stage.max_seq_len,
           "packing": stage.packing, "method": stage.method,
           "dpo": stage.dpo.max_prompt_length if stage.method == "dpo" else None}
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def prepare_data(stage: TrainStage, output_dir: str, model_dir: str, chat_template: str,
                 builders: int = 1) -> PreparedData:
    """Tokenized rows for ``stage`` (reused when already prepared), checked to be trainable."""
    files = data_files(stage)
    fp = fingerprint(stage, files, model_dir, chat_template)
    root = storage.join(output_dir, PREPARED_DIR, fp)
    manifest_path = storage.join(root, MANIFEST)
    if storage.exists(manifest_path):
        saved = json.loads(storage.read_text(manifest_path))
        prepared = PreparedData(**{**saved, "counts": Counter(saved["counts"])})
        logger.info("reusing prepared data %s (%d train rows, %d eval rows)", root, prepared.train_rows,
                    prepared.eval_rows)
    else:
        prepared = _build(stage, files, fp, root, model_dir, chat_template, builders)
        if prepared.train_rows:
            storage.write_text(manifest_path, json.dumps(prepared.__dict__, indent=1))
    _check_trainable(stage, prepared, len(files))
    return prepared


def _build(stage, files, fp, root, model_dir, chat_template, builders) -> PreparedData:
    import ray

    storage.remove_dir(root)  # a pass that died midway left rows without a manifest: start clean
    logger.info("preparing %d data file(s) into %s (max_seq_len %d, packing %s)", len(files), root,
                stage.max_seq_len, stage.packing)
    records = read_records(files, record_row)
    if stage.data.limit:
        records = records.limit(stage.data.limit)
    rows = records.map_batches(
        ExampleBuilder, batch_size=_BATCH_RECORDS, num_cpus=1,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, builders)),
        fn_constructor_kwargs=dict(model_dir=model_dir, chat_template=chat_template,
                                   max_seq_len=stage.max_seq_len, packing=stage.packing,
                                   eval_fraction=stage.data.eval_fraction, data_format=stage.data.format,
                                   method=stage.method, max_prompt_length=stage.dpo.max_prompt_length))
    # The train job passes its TrainConfig, which carries run_name: the Ray Data view shows
    # ultrachat-train-<run_name>-prepare with its MapBatches(ExampleBuilder) operator.
    named(rows, dataset_name("train", getattr(stage, "run_name", None), "prepare")).write_parquet(
        root, partition_cols=["kind"])
    counts = _sum_stats(root)
    return PreparedData(root=root, fingerprint=fp, train_rows=counts["train_rows"],
                        eval_rows=counts["eval_rows"], counts=counts)


def _sum_stats(root: str) -> Counter:
    import pyarrow.dataset as pads

    stats_dir = storage.join(root, f"kind={KIND_STATS}")
    total: Counter = Counter()
    if not storage.exists(stats_dir):
        return total
    filesystem, inner = storage.filesystem_for(stats_dir)
    table = pads.dataset(inner, filesystem=filesystem, format="parquet").to_table(columns=["stats"])
    for text in table.column("stats").to_pylist():
        total.update(json.loads(text))
    return Counter(dict(sorted(total.items())))


def _check_pairs(stage: TrainStage, counts: Counter) -> None:
    """method dpo: SFT-layout records are a wrong input, not a skip; truncation is news."""
    sft_layout = counts[f"skipped_{SFT_LAYOUT}"]
    if sft_layout:
        where = sorted(k.split("@", 1)[1] for k in counts if k.startswith(SFT_LAYOUT_AT))
        raise InputError(f"data.paths: method is dpo, but {sft_layout} of {counts['records']} records lack "
                         f"'chosen' or 'rejected' (first at {where[0] if where else '?'}): SFT data, or pairs with a "
                         f"side missing. Fix: "
                         f"give preference pairs (the preferences job's output, or the ultrafeedback_binarized "
                         f"layout: prompt, chosen, rejected), or set method: sft")
    for key, what in (("prompt_truncated", f"prompts kept their last dpo.max_prompt_length "
                                           f"({stage.dpo.max_prompt_length}) tokens"),
                      ("answer_truncated", f"pairs had an answer cut to fit max_seq_len ({stage.max_seq_len})")):
        if counts[key]:
            logger.warning("%d %s", counts[key], what)


def _check_trainable(stage: TrainStage, prepared: PreparedData, num_files: int) -> None:
    counts = prepared.counts
    skipped = {k: v for k, v in counts.items() if k.startswith("skipped_") and v}
    if stage.method == "dpo":
        _check_pairs(stage, counts)
    if prepared.train_rows == 0 and stage.method == "dpo":
        raise InputError(f"data.paths: no trainable preference pair in {counts['records']} records ({skipped}). "
                         f"Fix: give records with prompt, chosen and rejected (texts, or messages lists that "
                         f"share every turn but the last), with different chosen and rejected answers")
    if prepared.train_rows == 0:
        if not counts["records"]:
            raise InputError(f"data.paths: the {num_files} data file(s) hold no records. Fix: point data.paths "
                             f"to the generation output (dialogues/) or JSONL/Parquet dialogue records")
        if counts["skipped_no_trainable_tokens"] and not counts["examples"]:
            raise InputError(f"max_seq_len: every example is too long: in all {counts['records']} records the "
                             f"assistant's tokens start after token {stage.max_seq_len}, so nothing is left to "
                             f"train ({skipped}). Fix: raise max_seq_len, or give shorter dialogues")
        raise InputError(f"data.paths: no trainable dialogue in {counts['records']} records ({skipped}). "
                         f"Fix: give records with 'messages' ({{role, content}}), 'conversations' "
                         f"({{from, value}}) or 'data' (alternating texts), with status 'kept' if they have one; "
                         f"check data.format")
    if prepared.train_rows < stage.num_workers:
        raise InputError(f"num_workers: {prepared.train_rows} training rows cannot feed {stage.num_workers} "
                         f"workers (each needs at least one). Fix: lower num_workers or add data")
    # Dialogues the generator filtered (status != kept) are skipped by design; anything else is news.
    filtered = skipped.pop("skipped_status_not_kept", 0)
    if filtered:
        logger.info("left out %d dialogue(s) whose status is not kept", filtered)
    if skipped:
        logger.warning("skipped records: %s (counted; the rest train)", skipped)
    if counts["truncated_rounds"]:
        logger.warning("%d single rounds were longer than max_seq_len %d and were truncated to it",
                       counts["truncated_rounds"], stage.max_seq_len)
    if stage.data.eval_fraction and not prepared.eval_rows:
        logger.warning("data.eval_fraction %.3f held out no dialogue (too few); eval loss is off",
                       stage.data.eval_fraction)

