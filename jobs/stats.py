"""Entry point for `ray job submit`:

    # the cluster's Ray token first (KubeRay: cluster.yaml)
    export RAY_AUTH_MODE=token RAY_AUTH_TOKEN="$(kubectl get secret ultrachat-ray-token -o jsonpath='{.data.auth_token}' | base64 -d)"
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/stats.py --config configs/stats/local.yaml [key.path=value ...]

Same as `ultrachat stats --config ...`: the paper's dataset table for a dialogue set (report.md, stats.json,
plots/ under output_dir); `dry_run=true` prints the embedder's and judge's call/token plan only.
The last stdout line is a JSON summary of the run.
"""

import sys

import _bootstrap  # noqa: F401  (this checkout's ultrachat first on sys.path)

from ultrachat.cli import main

sys.exit(main(["stats", *sys.argv[1:]]))
