"""Precomputed reference log-probs (``dpo.reference: precomputed``): the reference without its weights.

Before step 1 the policy still has the starting weights, so it *is* the reference: one no-grad pass of
the policy engine over this rank's train and eval pairs, through the same ``pair_logps`` the training
step uses, gives every pair's reference log-probs. The ranks' entries are all-gathered, so each rank
holds the whole table (two floats per pair: 64k pairs are ~1.5 MB) and the lookup does not depend on
which rank a pair lands on after a restart. Rank 0 writes it into every checkpoint, so a resumed run
(whose policy has moved on) reads it back instead of recomputing it from moved weights.

Pairs are keyed by a hash of their token ids and labels, so a lookup cannot silently take another
pair's numbers; a pair missing from the table is an error. (Precomputed reference log-probs computed
at the wrong time, or not passed through, are the known way to a loss stuck at ln 2: trl#1962, #2423.
The integration test checks both the step-1 identity and that the loss then moves.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

TABLE_FILE = "reference_logps.json"
_KEY_COLUMNS = ("chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels")


def pair_keys(batch: dict) -> list[str]:
    """One stable key per pair of a raw (uncollated) batch of pair rows."""
    keys = []
    for row in zip(*(batch[column] for column in _KEY_COLUMNS)):
        digest = hashlib.blake2b(digest_size=12)
        for values in row:
            data = np.asarray(values, dtype=np.int32).tobytes()
            digest.update(len(data).to_bytes(8, "little") + data)
        keys.append(digest.hexdigest())
    return keys


class ReferenceTable:
    """``key -> (reference log-prob of the chosen answer, of the rejected answer)``."""

    def __init__(self, entries: dict[str, tuple[float, float]]):
        self.entries = entries

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, keys: list[str]):
        """(chosen, rejected) reference log-probs of a collated batch's pairs, as float32 tensors."""
        import torch

        missing = [key for key in keys if key not in self.entries]
        if missing:
            raise RuntimeError(f"{len(missing)} pair(s) of this micro-batch have no precomputed reference log-probs "
                               f"(table of {len(self.entries)}); the data changed under a run that resumed. Fix: "
                               f"re-run with a new output_dir, or delete its checkpoints to recompute the table")
        values = torch.tensor([self.entries[key] for key in keys], dtype=torch.float32)
        return values[:, 0], values[:, 1]

    def save(self, local_dir: str) -> None:
        Path(local_dir, TABLE_FILE).write_text(json.dumps(self.entries))

    @classmethod
    def load(cls, local_dir: str) -> "ReferenceTable":
        path = Path(local_dir, TABLE_FILE)
        if not path.is_file():
            raise RuntimeError(f"the checkpoint in {local_dir} has no {TABLE_FILE}, which dpo.reference: precomputed "
                               f"needs once the policy has moved. Fix: resume with the reference setting it was "
                               f"written with, or start over in a new output_dir")
        return cls({key: tuple(value) for key, value in json.loads(path.read_text()).items()})

    @classmethod
    def compute(cls, engine, batches_per_shard, logps_fn) -> "ReferenceTable":
        """Run ``logps_fn(engine, batch)`` (pair_logps) without gradients over every collated batch of every
        shard (``batches_per_shard``: iterables, each rank the same number of batches, as ZeRO-3's gathers
        need), then all-gather the ranks' entries."""
        import torch
        import torch.distributed as dist

        started, local = time.perf_counter(), {}
        engine.eval()
        with torch.no_grad():
            for batches in batches_per_shard:
                for batch in batches:
                    chosen, rejected, _, _ = logps_fn(engine, batch)
                    local.update(zip(batch["pair_keys"], zip(chosen.tolist(), rejected.tolist())))
        engine.train()
        parts = [local]
        if dist.is_initialized() and dist.get_world_size() > 1:
            parts = [None] * dist.get_world_size()
            dist.all_gather_object(parts, local)
        table = cls({key: value for part in parts for key, value in part.items()})
        logger.info("reference log-probs of %d pairs precomputed in %.1f s (the starting policy, no grad)",
                    len(table), time.perf_counter() - started)
        return table
