"""Make `import ultrachat` load this checkout's code, also under `ray job submit --working-dir .`.

The cluster image may carry an installed copy of the package; the submitted working dir wins, and
ultrachat.ray_runtime ships it to the workers (py_modules). Only ``platform/`` is put on the path,
never the repo root's ``platform`` folder as a package: the stdlib ``platform`` module stays intact.
"""

import sys
from pathlib import Path

_SOURCE = Path(__file__).resolve().parent.parent / "platform"
if (_SOURCE / "ultrachat" / "__init__.py").is_file() and str(_SOURCE) not in sys.path:
    sys.path.insert(0, str(_SOURCE))
