"""API keys for the workers, kept out of everything Ray records or shows.

Ray keeps task and actor arguments in their specs: a Ray Data actor's constructor kwargs and a map
task's fn_kwargs are pickled into the specs the GCS stores, which the state API, the dashboard and
error messages can reveal. So a key never travels as an argument. A worker first uses its own
environment (a Kubernetes Secret mounted as env on the pod, or what a local Ray inherited from the
driver); only a key missing there is fetched from the object store, where the driver put it, through
a reference whose pickled form holds no value.
"""

from __future__ import annotations

import os


class SecretEnv:
    """Environment variables the driver holds (``names`` -> value), for the workers of one stage."""

    def __init__(self, values: dict[str, str]):
        import ray

        self.names = tuple(sorted(values))
        # A reference nested in an object is not resolved into the arguments: the value stays in the store.
        self._ref = ray.put(dict(values)) if values else None

    def apply(self) -> None:
        """In a worker: set every variable its environment lacks (an existing value wins)."""
        missing = [name for name in self.names if not os.environ.get(name)]
        if not missing:
            return
        import ray

        values = ray.get(self._ref)
        for name in missing:
            os.environ[name] = values[name]

    def __repr__(self) -> str:  # what a log or an error could print: names only
        return f"SecretEnv(names={list(self.names)})"
