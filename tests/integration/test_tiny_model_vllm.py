"""The tiny model loads in the real vLLM CPU engine and generates through the UltraChat template."""

import json
import os
import subprocess
import sys

SCRIPT = r"""
import json, sys
from vllm import LLM, SamplingParams

def main():
    llm = LLM(model=sys.argv[1], dtype="float32", max_model_len=512, seed=0)
    params = SamplingParams(temperature=0, max_tokens=32)
    chats = [[{"role": "user", "content": "How can I start running?"}],
             [{"role": "user", "content": "Write a short poem about the sea."}]]
    outputs = llm.chat(chats, params)
    # vLLM logs to stdout too (also at shutdown): the result goes to a file.
    with open(sys.argv[2], "w") as out:
        json.dump([{"text": o.outputs[0].text, "ids": list(o.outputs[0].token_ids),
                       "prompt_ids": list(o.prompt_token_ids)} for o in outputs], out)

if __name__ == "__main__":
    main()
"""


def test_vllm_cpu_engine_generates_from_the_small_model(small_model_dir, tmp_path):
    from transformers import AutoTokenizer

    script = tmp_path / "generate.py"
    script.write_text(SCRIPT)
    result_file = tmp_path / "outputs.json"
    result = subprocess.run([sys.executable, str(script), str(small_model_dir), str(result_file)], capture_output=True,
                            text=True, timeout=600, env=os.environ.copy())
    assert result.returncode == 0, result.stderr[-4000:]
    outputs = json.loads(result_file.read_text())
    tokenizer = AutoTokenizer.from_pretrained(small_model_dir)
    expected_prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "How can I start running?"}], tokenize=True, add_generation_prompt=True,
        return_dict=False)
    # vLLM rendered the chat template exactly as transformers does (one <s>, no doubled BOS).
    assert outputs[0]["prompt_ids"] == expected_prompt
    for output in outputs:
        assert len(set(output["ids"])) >= 5, output
        assert output["text"].strip()


SEEDED = r"""
import asyncio, json, sys
from ultrachat.config.chat import Sampling, VllmBackend
from ultrachat.llm.vllm_backend import VllmChatBackend, shutdown_engines

async def main():
    backend = VllmChatBackend(VllmBackend(backend="vllm", model=sys.argv[1], dtype="float32", max_model_len=512),
                              sys.argv[1])
    def ask(seed, filler=0):
        text = "Tell me about rivers. " + "Water flows down to the sea. " * filler
        return backend.chat([{"role": "user", "content": text}], Sampling(temperature=1.0, max_tokens=16, seed=seed))
    alone = [(await ask(7)).text, (await ask(7)).text, (await ask(8)).text]
    # 8 concurrent ~480-token prompts exceed the 2048-token step budget of chunked prefill.
    burst = [r.text for r in await asyncio.gather(*(ask(100 + i, filler=38) for i in range(8)))]
    again = [(await ask(100 + i, filler=38)).text for i in (0, 7)]
    with open(sys.argv[2], "w") as out:
        json.dump({"alone": alone, "burst": burst, "again": again}, out)
    shutdown_engines()

if __name__ == "__main__":  # vLLM spawns its engine process, which re-imports this file
    asyncio.run(main())
"""


def test_seeded_turns_reproduce_on_the_cpu_engine_alone_and_in_a_batch(small_model_dir, tmp_path):
    """The generation backend passes per-turn seeds to vLLM's CPU engine (see ultrachat/llm/vllm_cpu.py)."""
    script = tmp_path / "seeded.py"
    script.write_text(SEEDED)
    result_file = tmp_path / "seeded.json"
    result = subprocess.run([sys.executable, str(script), str(small_model_dir), str(result_file)], capture_output=True,
                            text=True, timeout=600, env=os.environ.copy())
    assert result.returncode == 0, result.stderr[-4000:]
    got = json.loads(result_file.read_text())
    assert got["alone"][0] == got["alone"][1] != got["alone"][2]
    assert got["again"] == [got["burst"][0], got["burst"][7]]
    assert len(set(got["burst"])) == 8
