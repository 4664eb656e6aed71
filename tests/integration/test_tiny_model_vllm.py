"""The tiny model loads in the real vLLM CPU engine and generates through the UltraChat template."""

import json
import os
import subprocess
import sys

SCRIPT = r"""
import json, sys
from vllm import LLM, SamplingParams

def main():
    llm = LLM(model=sys.argv[1], dtype="float32", max_model_len=512, seed=0, enforce_eager=True)
    params = SamplingParams(temperature=0, max_tokens=32)
    chats = [[{"role": "user", "content": "How can I start running?"}],
             [{"role": "user", "content": "Write a short poem about the sea."}]]
    outputs = llm.chat(chats, params)
    with open(sys.argv[2], "w") as out:
        json.dump([{"text": o.outputs[0].text, "ids": list(o.outputs[0].token_ids),
                       "prompt_ids": list(o.prompt_token_ids)} for o in outputs], out)

if __name__ == "__main__":
    main()
"""


def run_script(source: str, model_dir, tmp_path):
    """Runs ``source`` with (model dir, result file) in its own process (vLLM's engine lives and dies with
    it); returns the JSON it wrote. vLLM logs to stdout too (also at shutdown): results go to a file."""
    script, result_file = tmp_path / "script.py", tmp_path / "result.json"
    script.write_text(source)
    result = subprocess.run([sys.executable, str(script), str(model_dir), str(result_file)], capture_output=True,
                            text=True, timeout=600, env=os.environ.copy())
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result_file.read_text())


def test_vllm_cpu_engine_generates_from_the_small_model(small_model_dir, tmp_path):
    from transformers import AutoTokenizer

    outputs = run_script(SCRIPT, small_model_dir, tmp_path)
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
    got = run_script(SEEDED, small_model_dir, tmp_path)
    assert got["alone"][0] == got["alone"][1] != got["alone"][2]
    assert got["again"] == [got["burst"][0], got["burst"][7]]
    assert len(set(got["burst"])) == 8
