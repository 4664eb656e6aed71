"""The trained model as a Hugging Face directory that transformers and vLLM load unchanged.

Weights are consolidated from the DeepSpeed engine: under ZeRO-3 every rank takes part in gathering
the partitions and rank 0 receives the full state dict; below stage 3 each rank holds the full
weights. Rank 0 writes safetensors, the config, generation config and the tokenizer with the chat
template used in training (so serving renders prompts exactly as training did), then moves the
directory into place whole. With LoRA the adapter is merged (a plain model, served anywhere) or saved
as a PEFT adapter beside a note of its base model (for vLLM's ``--enable-lora``).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

from ultrachat import storage
from ultrachat.config.training import TrainStage

logger = logging.getLogger(__name__)

EXPORT_DIR = "export"
EXPORT_MANIFEST = "ultrachat_export.json"


def export_model(engine, stage: TrainStage, model_dir: str, chat_template: str, dest: str, rank: int,
                 info: dict) -> None:
    """Collective under ZeRO-3 (call on every rank); rank 0 writes ``dest``."""
    module = engine.module
    adapter_only = stage.lora is not None and not stage.lora.merge_on_export
    if stage.lora is not None and stage.lora.merge_on_export:
        module = module.merge_and_unload()
    if stage.zero_stage == 3:
        state_dict = engine._zero3_consolidated_16bit_state_dict()  # rank 0 gets it, others None
    else:
        state_dict = None if adapter_only else module.state_dict()
    if rank != 0:
        return
    from transformers import AutoTokenizer, GenerationConfig

    with tempfile.TemporaryDirectory(prefix="ultrachat-export-") as tmp:
        if adapter_only:
            module.save_pretrained(tmp)  # adapter_config.json + adapter_model.safetensors
        else:
            module.save_pretrained(tmp, state_dict=_contiguous(state_dict), safe_serialization=True)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        tokenizer.chat_template = chat_template
        tokenizer.save_pretrained(tmp)
        try:
            GenerationConfig.from_pretrained(model_dir).save_pretrained(tmp)
        except OSError:
            pass  # the base model has none; vLLM then uses the config's defaults
        manifest = {**info, "format": "peft_adapter" if adapter_only else "full_model",
                    "base_model": model_dir if adapter_only else None}
        Path(tmp, EXPORT_MANIFEST).write_text(json.dumps(manifest, indent=1))
        _publish(tmp, dest)
    logger.info("exported the trained model to %s", dest)


def _contiguous(state_dict: dict) -> dict:
    # safetensors refuses shared or non-contiguous tensors; tied embeddings are re-tied on load.
    return {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}


def _publish(local_dir: str, dest: str) -> None:
    """Replace ``dest`` with ``local_dir`` as a whole: a reader never sees half an export."""
    local_dest = storage.local_path(dest)
    if local_dest is None:
        # An object store has no folder rename: the files readers check go last (serving copies a dir
        # once it has config.json; a re-run takes an export with a manifest for finished).
        storage.upload_dir(local_dir, dest, last=("config.json", EXPORT_MANIFEST))
        return
    staging = Path(f"{local_dest}.incoming")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(local_dir, staging)
    shutil.rmtree(local_dest, ignore_errors=True)
    staging.rename(local_dest)


def read_export_manifest(dest: str) -> dict | None:
    try:
        return json.loads(storage.read_text(storage.join(dest, EXPORT_MANIFEST)))
    except (FileNotFoundError, OSError):
        return None
