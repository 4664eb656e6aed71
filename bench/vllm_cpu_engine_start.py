"""vLLM's CPU engine: start time and decoding speed, compiled (vLLM's default) against eager.

Run from the repo root on an idle machine, one mode per process (the engine's processes end with it)::

    .venv/bin/python bench/vllm_cpu_engine_start.py compiled
    .venv/bin/python bench/vllm_cpu_engine_start.py eager
    VLLM_DISABLE_COMPILE_CACHE=1 .venv/bin/python bench/vllm_cpu_engine_start.py compiled   # no cache at all
    VLLM_USE_AOT_COMPILE=0 .venv/bin/python bench/vllm_cpu_engine_start.py compiled         # inductor's cache

SmolLM2-135M-Instruct (``local:smollm2-135m-instruct``, float32, max_model_len 2048). Start = from
``AsyncLLM.from_engine_args`` to its return; then 16 concurrent requests of 64 tokens each
(``ignore_eos``, temperature 0.7): output tokens/s. Prints one RESULT line. Results and the decision
they led to (eager on CPU by default): llm/vllm_cpu.py and docs/benchmarks.md.
"""

import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "platform"))

from ultrachat.local_env import apply_local_env_defaults  # noqa: E402  (after the path above)

apply_local_env_defaults()  # the jobs' vLLM CPU settings (KV cache, threads, no telemetry)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


async def measure(eager: bool) -> None:
    from vllm import AsyncEngineArgs, SamplingParams
    from vllm.v1.engine.async_llm import AsyncLLM

    from ultrachat.models.source import resolve_model

    path = resolve_model("local:smollm2-135m-instruct")
    started = time.monotonic()
    engine = AsyncLLM.from_engine_args(AsyncEngineArgs(model=path, dtype="float32", max_model_len=2048,
                                                       enforce_eager=eager))
    startup_s = time.monotonic() - started

    async def one(i: int) -> int:
        out = None
        params = SamplingParams(max_tokens=64, temperature=0.7, ignore_eos=True)
        async for out in engine.generate(f"Tell me about Paris number {i}.", params, request_id=str(i)):
            pass
        return len(out.outputs[0].token_ids)

    started = time.monotonic()
    tokens = sum(await asyncio.gather(*[one(i) for i in range(16)]))
    seconds = time.monotonic() - started
    print(f"RESULT mode={'eager' if eager else 'compiled'} start={startup_s:.1f}s 16x64 tokens in {seconds:.1f}s "
          f"= {tokens / seconds:.1f} tokens/s", flush=True)
    engine.shutdown()


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("compiled", "eager"):
        sys.exit("usage: bench/vllm_cpu_engine_start.py compiled|eager")
    asyncio.run(measure(sys.argv[1] == "eager"))
