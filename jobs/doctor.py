"""Entry point for `ray job submit`: check versions and imports on the driver and on every node.

    # the cluster's Ray token first (KubeRay: cluster.yaml)
    export RAY_AUTH_MODE=token RAY_AUTH_TOKEN="$(kubectl get secret ultrachat-ray-token -o jsonpath='{.data.auth_token}' | base64 -d)"
    ray job submit --address http://HEAD:8265 --working-dir . -- python jobs/doctor.py

Takes no config. The last stdout line is a JSON report; exit code 1 if any node has a problem.
"""

import sys

import _bootstrap  # noqa: F401  (this checkout's ultrachat first on sys.path)

from ultrachat.cli import main

sys.exit(main(["doctor", *sys.argv[1:]]))
