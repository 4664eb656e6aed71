"""The trained model as a Hugging Face directory that transformers and vLLM load unchanged.

Weights are consolidated from the DeepSpeed engine: under ZeRO-3 every rank takes part in gathering
the partitions and rank 0 receives the full state dict; below stage 3 each rank holds the full
weights. Rank 0 writes safetensors, the config, generation config and the tokenizer with the chat
template used in training (so serving renders prompts exactly as training did), then moves the
directory into place whole. With LoRA the adapter is merged (a plain model, served anywhere) or saved
as a PEFT adapter beside a note of its base model (for vLLM's ``--enable-lora``).

A re-export never leaves readers without a complete model, even if it is killed midway. On a local disk
the new export is copied beside the old and the two directories are swapped atomically (Linux
renameat2 RENAME_EXCHANGE; elsewhere old -> ``<dest>.previous``, new -> dest, and readers fall back to
``.previous`` in between). On an object store each export goes to ``<dest>/versions/<utc time>-<id>/``
and the pointer ``<dest>/CURRENT`` is written last; the version it replaced stays for readers still
copying it. ``resolve_export`` is the readers' side; a plain model dir (config.json under dest,
uploaded by other tools) still reads as itself.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import posixpath
import shutil
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path

from ultrachat import storage
from ultrachat.config.training import TrainStage
from ultrachat.errors import ModelSourceError

logger = logging.getLogger(__name__)

EXPORT_DIR = "export"
EXPORT_MANIFEST = "ultrachat_export.json"
CURRENT = "CURRENT"  # object stores: names the complete version readers load
VERSIONS = "versions"


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
    """Replace ``dest`` with ``local_dir`` as a whole: a reader sees the old export or the new, never a mix."""
    local_dest = storage.local_path(dest)
    if local_dest is None:
        _publish_version(local_dir, dest)
    else:
        _publish_local(local_dir, Path(local_dest))


def _publish_local(local_dir: str, dest: Path) -> None:
    staging, previous = dest.with_name(f".{dest.name}.incoming"), Path(f"{dest}.previous")
    # What a killed publish left: a partial copy (never read), or the old export moved aside by the
    # fallback swap (dest missing: it is what readers see, so it goes back first).
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(f"{dest}.incoming", ignore_errors=True)  # the staging name of earlier versions
    if previous.is_dir() and not dest.exists():
        previous.rename(dest)
    shutil.rmtree(previous, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(local_dir, staging)
    if not dest.exists():
        staging.rename(dest)
    elif _exchange(staging, dest):
        shutil.rmtree(staging)  # now the old export
    else:
        dest.rename(previous)
        staging.rename(dest)
        shutil.rmtree(previous)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the OS or filesystem
    cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)  # glibc >= 2.28
    if renameat2 is None:
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def _publish_version(local_dir: str, dest: str) -> None:
    version = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S.%fZ}-{uuid.uuid4().hex[:8]}"
    # config.json and the manifest last: a version holding them is complete, even without a pointer.
    storage.upload_dir(local_dir, storage.join(dest, VERSIONS, version), last=("config.json", EXPORT_MANIFEST))
    try:
        replaced = _current_version(dest)
    except ModelSourceError as err:  # a damaged pointer: the one written next replaces it
        logger.warning("%s", err)
        replaced = None
    storage.write_text(storage.join(dest, CURRENT), json.dumps({"version": version}) + "\n")
    # Older versions (and a killed publish's partial one) go; the replaced one stays for readers mid-copy.
    from pyarrow import fs

    filesystem, root = storage.filesystem_for(dest)
    stale = [e for e in filesystem.get_file_info(fs.FileSelector(posixpath.join(root, VERSIONS)))
             if e.base_name not in (version, replaced)]
    if replaced is not None:  # files of a plain (unversioned) export from before: no reader is on them now
        stale += [e for e in filesystem.get_file_info(fs.FileSelector(root)) if e.base_name not in (CURRENT, VERSIONS)]
    for entry in stale:
        if entry.type == fs.FileType.Directory:
            filesystem.delete_dir(entry.path)
        else:
            filesystem.delete_file(entry.path)


def _current_version(dest: str) -> str | None:
    pointer = storage.join(dest, CURRENT)
    try:
        version = json.loads(storage.read_text(pointer))["version"]
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (ValueError, KeyError, TypeError):
        version = None
    if not isinstance(version, str) or not version or "/" in version or version.startswith("."):
        raise ModelSourceError(f"{pointer} does not name an export version ({{\"version\": \"<name under "
                               f"{VERSIONS}/>\"}}); fix: export again (the train job re-exports), or delete it "
                               f"if {dest} holds a plain model dir")
    return version


def resolve_export(dest: str) -> str:
    """Where the export published at ``dest`` is complete right now: the version ``<dest>/CURRENT``
    names, ``<dest>.previous`` while a local fallback swap is midway, else ``dest`` itself."""
    local = storage.local_path(dest)
    if local is not None and not os.path.isdir(local) and os.path.isdir(f"{local.rstrip('/')}.previous"):
        return f"{dest.rstrip('/')}.previous"
    version = _current_version(dest)
    return dest if version is None else storage.join(dest, VERSIONS, version)


def read_export_manifest(dest: str) -> dict | None:
    try:
        return json.loads(storage.read_text(storage.join(resolve_export(dest), EXPORT_MANIFEST)))
    except (FileNotFoundError, OSError):
        return None
