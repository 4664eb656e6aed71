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


def driver_keys(endpoints: dict) -> dict[str, str]:
    """``endpoints``: config key (e.g. ``judge.chat``) -> chat config. The API keys the OpenAI-compatible
    ones name, read from the driver's environment before any work; every missing one is reported at
    once, by key. Endpoints without a key (``api_key_env: null``) and in-actor engines need none."""
    from ultrachat.errors import InputError

    keys, problems = {}, []
    for where, chat in endpoints.items():
        if getattr(chat, "backend", None) != "openai" or chat.api_key_env is None:
            continue
        value = os.environ.get(chat.api_key_env, "").strip()
        if not value:
            problems.append(f"{where}.api_key_env: environment variable {chat.api_key_env} is unset or empty (the "
                            f"key for {chat.base_url}). Fix: export {chat.api_key_env}=<key> where the driver runs "
                            f"(any value for a server without auth)")
        keys[chat.api_key_env] = value
    if problems:
        raise InputError("; ".join(problems))
    return keys
