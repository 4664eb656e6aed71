"""The Ray Serve application: ``import_path: serve.app:build_app`` (serve run / serve deploy / RayService).

Thin on purpose: the builder lives in ``ultrachat.serving.app``. The path fix lets a Serve config
whose ``working_dir`` is this repo import this checkout's library even without an install.
"""

import sys
from pathlib import Path

_SOURCE = Path(__file__).resolve().parent.parent / "platform"
if (_SOURCE / "ultrachat" / "__init__.py").is_file() and str(_SOURCE) not in sys.path:
    sys.path.insert(0, str(_SOURCE))

from ultrachat.serving.app import build_app  # noqa: E402

__all__ = ["build_app"]
