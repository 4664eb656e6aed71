"""Bind Ray Serve's HAProxy stats page to 127.0.0.1 in an image (run once, at `docker build`).

With RAY_SERVE_ENABLE_HA_PROXY=1, Ray 2.60 renders an HAProxy config whose `listen stats` section
binds `*:8404` (RAY_SERVE_HAPROXY_STATS_PORT): an unauthenticated page listing every backend, server
address and health on every interface of every Serve node, with no setting to turn it off. Ray's own
HAProxy manager reads stats through the admin socket, never this page, so loopback loses nothing.
This rewrites that one line of Ray's template in the installed package; the Dockerfile runs it and
fails the build if the template no longer has the line (a Ray upgrade then needs a fresh look).

    python -m ultrachat.serving.haproxy_stats            # patch the installed Ray
    python -m ultrachat.serving.haproxy_stats --check    # exit 1 unless it is bound to loopback
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

EXPOSED = re.compile(r"^(listen stats\n\s+bind )\*(:\{\{ config\.stats_port \}\})$", re.MULTILINE)
LOOPBACK = re.compile(r"^listen stats\n\s+bind 127\.0\.0\.1:\{\{ config\.stats_port \}\}$", re.MULTILINE)


def template_path() -> Path:
    import ray.serve._private.haproxy_templates as templates

    return Path(templates.__file__)


def bind_stats_to_loopback(text: str) -> str:
    """``text`` with the stats page bound to 127.0.0.1; unchanged when it already is."""
    if LOOPBACK.search(text):
        return text
    patched, count = EXPOSED.subn(r"\g<1>127.0.0.1\g<2>", text)
    if count != 1:
        raise RuntimeError(f"found {count} `listen stats` sections binding *:stats_port in Ray's HAProxy template "
                           f"(expected 1): this Ray's template changed. Fix: read its stats section and update "
                           f"ultrachat.serving.haproxy_stats (or drop RAY_SERVE_ENABLE_HA_PROXY)")
    return patched


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if the page listens beyond loopback")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = template_path()
    text = path.read_text()
    if args.check:
        bound = bool(LOOPBACK.search(text))
        logger.info("%s: HAProxy stats page %s", path, "on 127.0.0.1" if bound else "on every interface")
        return 0 if bound else 1
    patched = bind_stats_to_loopback(text)
    if patched != text:
        path.write_text(patched)
    logger.info("%s: HAProxy stats page bound to 127.0.0.1", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
