"""vLLM 0.32's CPU engine and per-request seeds: the one engine setting that makes them work.

The cause (vllm/v1/worker/gpu_model_runner.py, inherited by the CPU model runner): a seeded sampled
request gets its own ``torch.Generator``. When a step computes only part of a prompt (chunked
prefill: concurrent prompts beyond the 2048-token step budget, or one longer prompt), the token
sampled for it is discarded and ``_bookkeeping_sync`` rewinds that generator with
``set_offset(get_offset() - 4)``, which only CUDA generators support: on CPU torch raises "CPU
Generator does not use offset" and the engine dies. One short request at a time never splits a
prompt, which is why a single seeded request works on bare vLLM's server too.

With chunked prefill off, a step's budget is at least ``max_model_len`` and a prompt is never split,
so nothing is discarded and seeds reproduce exactly, alone or in a batch. GPU engines are unaffected
and keep chunked prefill. (The bug itself: restore the generator state with get_state/set_state on
CPU instead of set_offset; a change to vLLM, not here.)
"""

from __future__ import annotations

CHUNKED_PREFILL = "enable_chunked_prefill"


def seed_safe_engine_kwargs(engine_kwargs: dict, key: str) -> dict:
    """What to add to an engine's arguments so that seeded requests work on this platform.
    ``key`` names the config entry of ``engine_kwargs`` in the error."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return {}
    if engine_kwargs.get(CHUNKED_PREFILL):
        raise ValueError(f"{key}.{CHUNKED_PREFILL}: true makes vLLM 0.32's CPU engine die on the first seeded "
                         f"request whose prompt is split across steps (CPU torch generators have no offset to "
                         f"rewind). Fix: remove it (the platform turns chunked prefill off on CPU)")
    return {CHUNKED_PREFILL: False}
