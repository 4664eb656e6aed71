"""Entry point for `ray job submit`:

    # the cluster's Ray token first (KubeRay: cluster.yaml)
    export RAY_AUTH_MODE=token RAY_AUTH_TOKEN="$(kubectl get secret ultrachat-ray-token -o jsonpath='{.data.auth_token}' | base64 -d)"
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/preferences.py --config configs/preferences/local.yaml [key.path=value ...]

Same as `ultrachat preferences --config ...`: UltraFeedback-style preference data. Every prompt (the
generate job's openings or dialogues, or any prompt/messages records) gets N completions from a pool
of models under drawn principles; a judge rates each 1-5 on four aspects; the mean rating picks a
chosen and a rejected completion. pairs/ (the ultrafeedback_binarized layout, for `method: dpo`) and
completions/ (every completion with its ratings) under output_dir. `dry_run=true` prints the call
plan only. Calls are cached: a re-run pays only for what is new or failed.
The last stdout line is a JSON summary of the run.
"""

import sys

import _bootstrap  # noqa: F401  (this checkout's ultrachat first on sys.path)

from ultrachat.cli import main

sys.exit(main(["preferences", *sys.argv[1:]]))
