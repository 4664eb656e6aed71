"""Checkpoints of a training run and the check that a re-run may resume from them.

A checkpoint is one Ray Train checkpoint directory (``output_dir/checkpoints/step_0000040``), merged
by Ray Train from every rank's upload: DeepSpeed's engine state (``deepspeed/``: module, ZeRO
optimizer partitions per rank, LR scheduler) and ``trainer_state.json`` (rank 0: the optimizer step,
epoch, and how many micro-batches of that epoch each rank has consumed, which is the data position).

``run_signature.json`` beside them records what the checkpoints can only be loaded into: the model,
the number of workers (ZeRO partitions are per rank) and the ZeRO/LoRA layout. A re-run with a
different one fails before any worker starts instead of inside DeepSpeed's loader.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ultrachat import storage
from ultrachat.config.training import TrainStage
from ultrachat.errors import InputError

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
SIGNATURE_FILE = "run_signature.json"
STATE_FILE = "trainer_state.json"
DS_DIR, DS_TAG = "deepspeed", "state"


@dataclass
class TrainerState:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    micro_in_epoch: int = 0  # micro-batches of `epoch` each rank has consumed
    tokens: int = 0  # non-padding tokens trained, all ranks


def checkpoint_dir_name(step: int) -> str:
    return f"step_{step:07d}"


def save(engine, state: TrainerState, local_dir: str, rank: int) -> None:
    """This rank's part of a checkpoint into ``local_dir`` (Ray Train merges the ranks' parts)."""
    Path(local_dir, DS_DIR, DS_TAG).mkdir(parents=True, exist_ok=True)
    engine.save_checkpoint(str(Path(local_dir, DS_DIR)), tag=DS_TAG, save_latest=False)
    if rank == 0:
        Path(local_dir, STATE_FILE).write_text(json.dumps(asdict(state)))


def load(engine, local_dir: str) -> TrainerState:
    state = TrainerState(**json.loads(Path(local_dir, STATE_FILE).read_text()))
    path, _ = engine.load_checkpoint(str(Path(local_dir, DS_DIR)), tag=DS_TAG, load_optimizer_states=True,
                                     load_lr_scheduler_states=True)
    if path is None:
        raise RuntimeError(f"DeepSpeed found no engine state in {local_dir}/{DS_DIR}/{DS_TAG}; the checkpoint is "
                           f"incomplete. Fix: delete that checkpoint folder to resume from the one before")
    return state


def run_signature(stage: TrainStage, model_dir: str) -> dict:
    config = Path(model_dir, "config.json")
    model_hash = hashlib.sha1(config.read_bytes()).hexdigest()[:12] if config.is_file() else model_dir
    return {"model": stage.model, "model_config_sha1": model_hash, "num_workers": stage.num_workers,
            "zero_stage": stage.zero_stage, "lora_rank": stage.lora.rank if stage.lora else None,
            # Only named for dpo, so SFT checkpoints written before methods existed still resume.
            **({"method": stage.method} if stage.method != "sft" else {}),
            # Likewise only named when precomputed: those checkpoints carry the reference table.
            **({"dpo_reference": "precomputed"} if stage.method == "dpo" and stage.dpo.reference == "precomputed"
               else {})}


def existing_checkpoints(output_dir: str) -> list[str]:
    from pyarrow import fs

    path = storage.join(output_dir, CHECKPOINTS_DIR)
    if not storage.exists(path):
        return []
    filesystem, root = storage.filesystem_for(path)
    infos = filesystem.get_file_info(fs.FileSelector(root))
    return sorted(os.path.basename(i.path) for i in infos
                  if i.type == fs.FileType.Directory and os.path.basename(i.path).startswith("step_"))


def check_resumable(output_dir: str, signature: dict) -> list[str]:
    """The checkpoints a run can resume from (maybe none); raises if they belong to another setup."""
    found = existing_checkpoints(output_dir)
    path = storage.join(output_dir, SIGNATURE_FILE)
    if found:
        try:
            previous = json.loads(storage.read_text(path))
        except FileNotFoundError:
            previous = None
        if previous is None:
            raise InputError(f"output_dir: {output_dir} holds checkpoints ({found[-1]}) but no {SIGNATURE_FILE}, "
                             f"so they may come from another model or world size. Fix: use a new output_dir, or "
                             f"delete {storage.join(output_dir, CHECKPOINTS_DIR)} to start over")
        changed = {k: (previous.get(k), v) for k, v in signature.items() if previous.get(k) != v}
        if changed:
            detail = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
            raise InputError(f"output_dir: the checkpoints in {output_dir} ({found[-1]}) come from an incompatible run "
                             f"({detail}); DeepSpeed cannot load ZeRO state across a different model, world size or "
                             f"layout. Fix: set output_dir (or run_name) to a new folder, restore the previous "
                             f"settings, or delete {storage.join(output_dir, CHECKPOINTS_DIR)} to start over")
        logger.info("resuming from %s (%d checkpoint(s) kept)", found[-1], len(found))
    storage.write_text(path, json.dumps(signature, indent=1))
    return found
