"""Entry point for `ray job submit`:

    # the cluster's Ray token first (KubeRay: cluster.yaml)
    export RAY_AUTH_MODE=token RAY_AUTH_TOKEN="$(kubectl get secret ultrachat-ray-token -o jsonpath='{.data.auth_token}' | base64 -d)"
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/generate.py --config configs/generate/local.yaml [key.path=value ...]

Same as `ultrachat generate --config ...`: constructs opening lines (`construction:`) and/or simulates
dialogues (`user:`/`assistant:`), see `stages`; `dry_run=true` prints the planned LLM calls only.
The last stdout line is a JSON summary of the run.
"""

import sys

import _bootstrap  # noqa: F401  (this checkout's ultrachat first on sys.path)

from ultrachat.cli import main

sys.exit(main(["generate", *sys.argv[1:]]))
