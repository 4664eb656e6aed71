"""The generate job: construct opening lines (construction/), then simulate dialogues from them
(generation/). The two stages share nothing but this orchestration and the openings folder."""

from __future__ import annotations

import os
from collections import Counter

from ultrachat import storage
from ultrachat.config.generation import OpeningsInput
from ultrachat.config.schema import GenerateConfig
from ultrachat.construction.plan import plan_construction
from ultrachat.construction.run import OPENINGS_DIR, openings_complete, run_construction
from ultrachat.errors import InputError
from ultrachat.generation.openings import read_openings
from ultrachat.generation.plan import plan_dialogue_calls
from ultrachat.generation.resume import plan_dialogues
from ultrachat.generation.run import DIALOGUES_DIR, run_dialogues


def run_generate(config: GenerateConfig) -> dict:
    """The stages ``config`` asks for: construct opening lines, then simulate dialogues from them."""
    stages = config.run_stages
    secrets = _api_keys(config, stages)
    if config.dry_run:
        return _dry_run(config, stages)
    counts: dict = {}
    if "construct" in stages:
        counts["construction"] = run_construction(config, secrets)
    if "dialogues" in stages:
        counts.update(run_dialogues(config, openings_input(config), secrets))
    return counts


def openings_input(config: GenerateConfig) -> OpeningsInput:
    """``openings`` as given, else the openings the construct stage wrote under output_dir."""
    if config.openings is not None:
        return config.openings
    built = storage.join(config.output_dir, OPENINGS_DIR)
    if not openings_complete(built):
        raise InputError(f"stages: the dialogues read the built openings in {built}, which are missing or "
                         f"incomplete (no _manifest.json). Fix: run the construct stage first (stages: "
                         f"[construct, dialogues]), or give openings.path")
    return OpeningsInput(path=built, format="parquet")


def _dry_run(config: GenerateConfig, stages: list[str]) -> dict:
    result: dict = {"dry_run": True}
    if "construct" in stages:
        result["construction"] = plan_construction(config)
    if "dialogues" in stages:
        if "construct" in stages:
            per_sector = {k: s["openings_at_most"] for k, s in result["construction"]["sectors"].items()}
        else:
            source = openings_input(config)
            openings = read_openings(source)
            plan = plan_dialogues(openings, storage.join(config.output_dir, DIALOGUES_DIR), source.limit,
                                  config.retry_failed)
            per_sector = dict(Counter(plan.todo["sector"].to_pylist()))
        result["dialogues"] = plan_dialogue_calls(config, per_sector)
    return result


def _api_keys(config: GenerateConfig, stages: list[str]) -> dict[str, str]:
    """Fail before any work if an API key variable is unset; hand the keys to the actors."""
    roles = {}
    if "dialogues" in stages:
        roles.update(user=config.user.chat, assistant=config.assistant.chat)
    if "construct" in stages:
        roles["construction.llm"] = config.construction.llm.chat
    keys = {}
    for role, chat in roles.items():
        if chat.backend != "openai" or chat.api_key_env is None:
            continue
        value = os.environ.get(chat.api_key_env, "")
        if not value:
            raise ValueError(f"{role}.chat.api_key_env names ${chat.api_key_env}, which is not set. Fix: "
                             f"export {chat.api_key_env}=<your key> where the job's driver runs")
        keys[chat.api_key_env] = value
    return keys
