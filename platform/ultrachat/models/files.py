"""What a replica loads: the model dir (copied from object storage when needed) and its chat template.

Runs inside each replica before the engine starts. A URI source (s3://, gs://, file://) is copied
once per node into the model cache, under a name derived from the URI, through a staging folder
renamed into place, so concurrent replicas never load half a copy. A training export is read where
it is complete right now (its CURRENT version on an object store; training/export.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

from filelock import FileLock

from ultrachat import storage
from ultrachat.config.serving import REMOTE_MODEL_SCHEMES
from ultrachat.errors import ModelSourceError
from ultrachat.models.chat_template import ULTRACHAT_CHAT_TEMPLATE
from ultrachat.models.source import resolve_model, tiny_cache_dir
from ultrachat.training.export import resolve_export

logger = logging.getLogger(__name__)


def local_model_dir(source: str, key: str) -> str:
    """A local dir or hub id vLLM can load; ``key`` names the config entry in errors."""
    try:
        current = resolve_export(source)  # a hub id or tiny: ref names no dir: it stays as it is
    except ModelSourceError as err:
        raise ModelSourceError(f"{key}: {err}") from None
    if not source.startswith(REMOTE_MODEL_SCHEMES):
        return resolve_model(current, key)
    from pyarrow import fs

    filesystem, inner = storage.filesystem_for(current)
    config = filesystem.get_file_info(storage.join(inner, "config.json"))
    if config.type != fs.FileType.File:
        raise ModelSourceError(f"{key}: {source} holds no config.json; point it at a model dir such as a "
                               f"training run's export/ folder")
    # Each export is a new version dir (its name in ``current``); a plain model dir re-uploaded in place
    # changes config.json's time and size. Either makes a new copy instead of serving the stale one.
    version = f"{current}\n{config.mtime_ns}\n{config.size}"
    target = tiny_cache_dir().parent / "remote" / hashlib.sha256(version.encode()).hexdigest()[:16]
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{target}.lock"):
        if not (target / "config.json").is_file():
            staging = Path(f"{target}.incoming")
            shutil.rmtree(staging, ignore_errors=True)
            logger.info("copying the model from %s to %s", current, target)
            storage.download_dir(current, str(staging))
            staging.rename(target)
    return str(target)


def has_own_chat_template(model_dir: str) -> bool:
    """Whether a local model dir ships a chat template (transformers' three places for one)."""
    path = Path(model_dir)
    if not path.is_dir():  # a hub id: only the tokenizer knows; let vLLM use what it finds
        return True
    if (path / "chat_template.jinja").is_file() or (path / "chat_template.json").is_file():
        return True
    config = path / "tokenizer_config.json"
    return config.is_file() and bool(json.loads(config.read_text()).get("chat_template"))


def chat_template_for(model_dir: str, mode: str, key: str) -> str | None:
    """The template to hand vLLM, or None for the model's own.

    ``auto``: the model's own (a training export saves the template it trained with), else the
    UltraChat format; ``ultrachat``: always the UltraChat format; ``model``: the model's own, an
    error if it has none; anything else: a path or URI (s3://, gs://, file://) of a Jinja template file.
    """
    if mode == "ultrachat":
        return ULTRACHAT_CHAT_TEMPLATE
    if mode in ("auto", "model"):
        if has_own_chat_template(model_dir):
            return None
        if mode == "model":
            raise ModelSourceError(f"{key}: {model_dir} has no chat template. Fix: chat_template: auto or "
                                   f"ultrachat (the UltraChat format), or a path to a .jinja file")
        logger.info("%s has no chat template: serving it with the UltraChat format", model_dir)
        return ULTRACHAT_CHAT_TEMPLATE
    path = mode if storage.is_uri(mode) else str(Path(mode).expanduser())
    try:
        return storage.read_text(path)
    except (FileNotFoundError, IsADirectoryError):
        raise ModelSourceError(f"{key}: chat template file {mode!r} does not exist. Fix: auto, ultrachat, model "
                               f"or the path or URI of a Jinja template file") from None
