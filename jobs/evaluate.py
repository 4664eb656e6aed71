"""Entry point for `ray job submit`:

    # the cluster's Ray token first (KubeRay: cluster.yaml)
    export RAY_AUTH_MODE=token RAY_AUTH_TOKEN="$(kubectl get secret ultrachat-ray-token -o jsonpath='{.data.auth_token}' | base64 -d)"
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/evaluate.py --config configs/evaluate/local.yaml [key.path=value ...]

Same as `ultrachat evaluate --config ...`: every candidate (an OpenAI-compatible endpoint) answers the
prompts (default: the paper's 385), a judge compares the answers pairwise in both orders and scores
each 1-10; report.md, results.json and plots/ under output_dir. `dry_run=true` prints the call and
token plan only. Answers and verdicts are cached: a re-run pays only for what is new.
The last stdout line is a JSON summary of the run.
"""

import sys

import _bootstrap  # noqa: F401  (this checkout's ultrachat first on sys.path)

from ultrachat.cli import main

sys.exit(main(["evaluate", *sys.argv[1:]]))
