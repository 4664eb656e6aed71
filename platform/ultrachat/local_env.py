"""Environment defaults for a locally started Ray: no telemetry, vLLM's CPU backend settings.

Applied with ``setdefault`` so anything the user exported wins, before Ray starts, so the local Ray
workers (and the vLLM engines inside them) inherit them. The VLLM_CPU_* variables are only read by
vLLM's CPU backend. Tests and the Makefile add HF_HUB_OFFLINE=1 (nothing may download here).
"""

from __future__ import annotations

import os


def local_env_defaults() -> dict[str, str]:
    cores = os.cpu_count() or 1
    return {
        "RAY_USAGE_STATS_ENABLED": "0",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        # A private local Ray is single-node: this keeps it on loopback. Without it Ray replaces
        # 127.0.0.1 by the machine's outward address. (Read when `ray` is first imported.)
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        # vLLM's engine <-> worker message queues otherwise bind the machine's outward address.
        "VLLM_HOST_IP": "127.0.0.1",
        # vLLM's CPU backend: KV cache size in GiB, and use every core (none reserved).
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CPU_OMP_THREADS_BIND": f"0-{cores - 1}",
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        # A CPU worker's own teardown takes ~5 s on 2 busy cores, vLLM's default grace; past it the
        # worker is SIGTERMed, leaves its shared memory to the resource tracker and warns.
        "VLLM_WORKER_SHUTDOWN_TIMEOUT_SECONDS": "15",
    }


def apply_local_env_defaults() -> None:
    for key, value in local_env_defaults().items():
        os.environ.setdefault(key, value)
