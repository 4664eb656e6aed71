"""vLLM 0.32's CPU engine: the engine settings the platform adds there, and why.

**Chunked prefill off, for per-request seeds.** (vllm/v1/worker/gpu_model_runner.py, inherited by
the CPU model runner): a seeded sampled request gets its own ``torch.Generator``. When a step
computes only part of a prompt (chunked prefill: concurrent prompts beyond the 2048-token step
budget, or one longer prompt), the token sampled for it is discarded and ``_bookkeeping_sync``
rewinds that generator with ``set_offset(get_offset() - 4)``, which only CUDA generators support: on
CPU torch raises "CPU Generator does not use offset" and the engine dies. With chunked prefill off, a
step's budget is at least ``max_model_len`` and a prompt is never split, so nothing is discarded and
seeds reproduce exactly, alone or in a batch. (The bug itself: restore the generator state with
get_state/set_state on CPU instead of set_offset; a change to vLLM, not here.)

**Eager mode unless the config says otherwise.** On CPU vLLM compiles the model with torch inductor
at every engine start, and 0.32 cannot load its own AOT compile cache there ("'function' object has
no attribute 'finalize_loading'"), so every start compiles again. Measured on 2 cores with
SmolLM2-135M (float32, max_model_len 2048): start 124-140 s compiled against 35 s eager; decoding
16 x 64 tokens 119-167 against 115 tokens/s. CPU runs are tests, demos and small jobs, where the
~100 s per start outweighs the faster decoding; set ``enforce_eager: false`` in the engine arguments
for a long CPU run. GPU engines keep every vLLM default (compile and CUDA graphs).
"""

from __future__ import annotations

CHUNKED_PREFILL = "enable_chunked_prefill"
ENFORCE_EAGER = "enforce_eager"


def cpu_engine_kwargs(engine_kwargs: dict, key: str) -> dict:
    """The engine arguments to use on this platform: ``engine_kwargs`` plus the CPU settings above.
    ``key`` names the config entry of ``engine_kwargs`` in the error."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return dict(engine_kwargs)
    if engine_kwargs.get(CHUNKED_PREFILL):
        raise ValueError(f"{key}.{CHUNKED_PREFILL}: true makes vLLM 0.32's CPU engine die on the first seeded "
                         f"request whose prompt is split across steps (CPU torch generators have no offset to "
                         f"rewind). Fix: remove it (the platform turns chunked prefill off on CPU)")
    return {ENFORCE_EAGER: True, **engine_kwargs, CHUNKED_PREFILL: False}
