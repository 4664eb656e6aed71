"""Entry point for serving, locally or through `ray job submit`:

    python jobs/serve.py --config configs/serve/local.yaml          # local Ray; serves until Ctrl-C
    # the cluster's Ray token first (KubeRay: cluster.yaml)
    export RAY_AUTH_MODE=token RAY_AUTH_TOKEN="$(kubectl get secret ultrachat-ray-token -o jsonpath='{.data.auth_token}' | base64 -d)"
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/serve.py --config configs/serve/my-cluster.yaml detach=true

Same as `ultrachat serve --config ...`. It deploys the Serve app, waits until every model answers,
prints the base URL with a curl/openai example and, unless `detach=true` (the app then keeps running
on the cluster, like `serve deploy`), serves until Ctrl-C. The last stdout line is a JSON summary.
"""

import sys

import _bootstrap  # noqa: F401  (this checkout's ultrachat first on sys.path)

from ultrachat.cli import main

sys.exit(main(["serve", *sys.argv[1:]]))
