"""A local S3-compatible object store (moto's server) on 127.0.0.1, for tests and trying s3:// paths offline.

The jobs reach it only through the standard AWS variables that real S3-compatible stores (MinIO, R2)
use too, so no code path is test-only:

    python -m ultrachat.devtools.object_store --port 9000 --bucket demo
    # prints the variables to export, then: ultrachat generate ... output_dir=s3://demo/run1
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
from typing import Iterator

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true"}


@contextlib.contextmanager
def local_s3(bucket: str, port: int = 0) -> Iterator[dict[str, str]]:
    """Run the store with ``bucket`` created; yields the environment that points pyarrow (and Ray) at it."""
    from moto.server import ThreadedMotoServer  # the dev extra; imported here so the package never needs it
    from pyarrow import fs

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        host, bound = server.get_host_and_port()
        # Buckets are the operator's to create; the jobs never create them.
        fs.S3FileSystem(endpoint_override=f"{host}:{bound}", scheme="http", access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                        secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"], region=CREDENTIALS["AWS_REGION"],
                        allow_bucket_creation=True).create_dir(bucket)
        yield {"AWS_ENDPOINT_URL_S3": f"http://{host}:{bound}", **CREDENTIALS}
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--bucket", default="ultrachat")
    args = parser.parse_args()
    with local_s3(args.bucket, args.port) as env:
        # Shell lines on stdout (eval-able), the command's output rather than a log line.
        sys.stdout.write("".join(f"export {key}={value}\n" for key, value in env.items()))
        sys.stdout.write(f"# bucket: s3://{args.bucket}  (Ctrl-C stops the store)\n")
        sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
