"""Model references in configs: a local Hugging Face model dir, a hub id, ``tiny:<size>`` (a random
test model) or ``local:<name>`` (a real model shipped in a Python package, ``models/packaged.py``).

``check_model_ref`` runs during config validation (syntax, and for local paths: exists and holds
config.json). ``resolve_model`` runs when a job starts, before any worker: it builds ``tiny:`` and
``local:`` models into a local cache and refuses hub ids that cannot be fetched (HF_HUB_OFFLINE=1 and
not cached).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from ultrachat.errors import ModelSourceError
from ultrachat.models.packaged import LOCAL_PREFIX, check_packaged_ref, ensure_packaged

logger = logging.getLogger(__name__)

TINY_PREFIX = "tiny:"
TINY_SIZES = ("tiny", "small")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_FIX_MISSING = (
    "Fix: write `local:smollm2-135m-instruct` for the small real instruct model that setup installs, "
    "`tiny:small` for a random test model the job builds, or point to a Hugging Face model directory (the folder holding config.json "
    "and the weights, e.g. a training run's export/)."
)


def _looks_like_path(ref: str) -> bool:
    return ref.startswith(("/", "./", "../", "~")) or Path(ref).exists()


def _check_local_dir(ref: str) -> Path:
    path = Path(ref).expanduser()
    if not path.exists():
        raise ModelSourceError(f"model path {ref!r} does not exist. {_FIX_MISSING}")
    if not path.is_dir() or not (path / "config.json").is_file():
        found = sorted(p.name for p in path.iterdir())[:8] if path.is_dir() else []
        what = f"it holds {found}" if found else ("it is a file" if path.is_file() else "it is empty")
        raise ModelSourceError(
            f"{ref!r} is not a Hugging Face model directory: no config.json in it ({what}). {_FIX_MISSING}"
        )
    return path.resolve()


def check_model_ref(ref: str) -> str:
    """Validate a reference's form; local paths must already be model dirs. Returns it unchanged."""
    if ref.startswith(TINY_PREFIX):
        size = ref[len(TINY_PREFIX):]
        if size not in TINY_SIZES:
            raise ModelSourceError(
                f"unknown tiny model {ref!r}; expected one of {[TINY_PREFIX + s for s in TINY_SIZES]}"
            )
        return ref
    if ref.startswith(LOCAL_PREFIX):
        check_packaged_ref(ref)
        return ref
    if "://" in ref:
        raise ModelSourceError(
            f"model URIs like {ref!r} are not supported as a model source; copy the model to a local "
            f"or mounted directory (e.g. a PVC at /mnt/shared) and give that path"
        )
    if _looks_like_path(ref):
        _check_local_dir(ref)
        return ref
    if _HUB_ID.match(ref):
        return ref
    raise ModelSourceError(
        f"{ref!r} is neither an existing model directory, a hub id like "
        f"'meta-llama/Llama-3.1-8B-Instruct', nor tiny:<size> / local:<name>. {_FIX_MISSING}"
    )


def tiny_cache_dir() -> Path:
    """Where ``tiny:`` and ``local:`` models are built: $ULTRACHAT_CACHE or ~/.cache/ultrachat, under models/."""
    root = os.environ.get("ULTRACHAT_CACHE") or Path.home() / ".cache" / "ultrachat"
    return Path(root) / "models"


def resolve_model(ref: str, key: str = "model") -> str:
    """What vLLM / transformers should load: an absolute local dir or a fetchable hub id.

    ``key`` is the config key path the reference came from, for the error message.
    """
    try:
        check_model_ref(ref)
        if ref.startswith(TINY_PREFIX):
            return str(_ensure_tiny(ref[len(TINY_PREFIX):]))
        if ref.startswith(LOCAL_PREFIX):
            return str(ensure_packaged(tiny_cache_dir(), check_packaged_ref(ref)))
        if _looks_like_path(ref):
            return str(_check_local_dir(ref))
        return _check_hub_id(ref)
    except ModelSourceError as err:
        raise ModelSourceError(f"{key}: {err}") from None


def _check_hub_id(ref: str) -> str:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("1", "true", "True", "YES", "yes"):
        return ref
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(ref, "config.json"), str):
        return ref
    raise ModelSourceError(
        f"{ref!r} is a hub id, but HF_HUB_OFFLINE=1 forbids downloading it and it is not in the "
        f"local Hugging Face cache. {_FIX_MISSING}"
    )


def _ensure_tiny(size: str) -> Path:
    from filelock import FileLock

    from ultrachat.models.tiny import build_fingerprint, build_tiny_model

    # The fingerprint changes with the corpus or the recipe, so a stale cached build is never reused.
    target = tiny_cache_dir() / f"tiny-{size}-seed0-{build_fingerprint(size)}"
    target.parent.mkdir(parents=True, exist_ok=True)
    # Several processes (tests, jobs) may ask at once: one builds, the others wait for it.
    with FileLock(str(target) + ".lock"):
        if not (target / "config.json").is_file():
            logger.info("building tiny model %s into %s (once; later runs reuse it)", size, target)
            build_tiny_model(target, size=size, seed=0)
    return target
