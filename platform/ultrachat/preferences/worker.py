"""The preferences job's actors: the evaluation's call handler (answers, judge calls asked once more
with a format reminder, unparseable replies counted) on the completion pool and the rating judge."""

from __future__ import annotations

from dataclasses import dataclass

from ultrachat.config.preferences import JUDGE, PreferencesStage
from ultrachat.evaluation.worker import CallHandler
from ultrachat.llm import make_backend
from ultrachat.preferences.ratings import AspectProtocols
from ultrachat.stages.pool import PoolWorker


class PreferenceWorker(PoolWorker):
    """The Ray Data actor of the preferences job (the dashboard shows ``MapBatches(PreferenceWorker)``)."""


@dataclass
class PreferenceHandlerFactory:
    """Picklable: travels to the actors, which call it once. ``resolved``: endpoint name -> the local
    model dir of an in-actor vLLM endpoint, resolved on the driver."""

    stage_json: str
    resolved: dict[str, str]

    def __call__(self) -> CallHandler:
        config = PreferencesStage.model_validate_json(self.stage_json)
        endpoints = {m.name: (make_backend(m.chat, self.resolved.get(m.name)), m.sampling) for m in config.models}
        endpoints[JUDGE] = (make_backend(config.judge.chat, self.resolved.get(JUDGE)), config.judge.sampling)
        judge = config.judge
        return CallHandler(endpoints, AspectProtocols(tuple(a.name for a in judge.aspects), judge.structured_output,
                                                      judge.format_reminder))
