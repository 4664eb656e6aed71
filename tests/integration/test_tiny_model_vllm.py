"""The small model on the real vLLM CPU engine through the generation backend (one engine for all the
checks): greedy replies are varied text, per-turn seeds reproduce alone and in a batch, and a prompt
longer than max_model_len is refused before the engine. (That vLLM renders the chat template to
exactly transformers' token ids: tests/unit/test_vllm_backend.py, on vLLM's own renderer.)"""

import json
import os
import subprocess
import sys

SCRIPT = r"""
import asyncio, json, sys
from ultrachat.config.chat import Sampling, VllmBackend
from ultrachat.llm.base import ChatError
from ultrachat.llm.vllm_backend import VllmChatBackend, shutdown_engines

async def main():
    backend = VllmChatBackend(VllmBackend(backend="vllm", model=sys.argv[1], dtype="float32", max_model_len=512),
                              sys.argv[1])
    greedy = [(await backend.chat([{"role": "user", "content": text}], Sampling(temperature=0, max_tokens=32))).text
              for text in ("How can I start running?", "Write a short poem about the sea.")]
    def ask(seed, filler=0):
        text = "Tell me about rivers. " + "Water flows down to the sea. " * filler
        return backend.chat([{"role": "user", "content": text}], Sampling(temperature=1.0, max_tokens=16, seed=seed))
    alone = [(await ask(7)).text, (await ask(7)).text, (await ask(8)).text]
    # 8 concurrent ~480-token prompts exceed the 2048-token step budget of chunked prefill.
    burst = [r.text for r in await asyncio.gather(*(ask(100 + i, filler=38) for i in range(8)))]
    again = [(await ask(100 + i, filler=38)).text for i in (0, 7)]
    try:
        await ask(1, filler=200)
        too_long = None
    except ChatError as err:
        too_long = [err.reason, str(err)]
    with open(sys.argv[2], "w") as out:
        json.dump({"greedy": greedy, "alone": alone, "burst": burst, "again": again, "too_long": too_long}, out)
    shutdown_engines()

if __name__ == "__main__":  # vLLM spawns its engine process, which re-imports this file
    asyncio.run(main())
"""


def test_small_model_on_the_cpu_engine_varied_text_seeded_turns_and_a_too_long_prompt(small_model_dir, tmp_path):
    """The generation backend passes per-turn seeds to vLLM's CPU engine (see ultrachat/llm/vllm_cpu.py)."""
    script, result_file = tmp_path / "script.py", tmp_path / "result.json"
    script.write_text(SCRIPT)
    # vLLM logs to stdout too (also at shutdown): results go to a file.
    result = subprocess.run([sys.executable, str(script), str(small_model_dir), str(result_file)],
                            capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert result.returncode == 0, result.stderr[-4000:]
    got = json.loads(result_file.read_text())
    for text in got["greedy"]:
        assert text.strip() and len(set(text.split())) >= 4, got["greedy"]
    assert got["alone"][0] == got["alone"][1] != got["alone"][2]
    assert got["again"] == [got["burst"][0], got["burst"][7]]
    assert len(set(got["burst"])) == 8
    reason, message = got["too_long"]
    assert reason == "prompt_too_long" and "max_model_len" in message and "512" in message, got["too_long"]
