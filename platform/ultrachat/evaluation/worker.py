"""The evaluation's row handler, run by ``EvaluationWorker`` actors (stages/pool.py): one call row in
(an answer or a judgment), one record out, on the platform's OpenAI backend (one per endpoint and
actor: its concurrency cap, RPM/TPM limiter and retries).

A judge reply without a parseable verdict is asked once more, with the reply and a format reminder;
a second miss is an ``unparseable`` record (kept with its text, counted, never guessed). In
``structured_output: auto`` an endpoint that refuses the JSON-schema request is asked in text from
then on (this actor), and the record says which mode its verdict came from.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass

from ultrachat import observability
from ultrachat.config.evaluation import JUDGE, EvaluateStage
from ultrachat.evaluation.calls import ANSWER
from ultrachat.evaluation.judging import parse_verdict, response_format, schema_rejected
from ultrachat.llm import make_backend, shutdown_engines
from ultrachat.llm.base import ChatError, ChatResult
from ultrachat.stages.pool import PoolWorker

logger = logging.getLogger(__name__)


class EvaluationWorker(PoolWorker):
    """The Ray Data actor of the evaluate job (the dashboard shows ``MapBatches(EvaluationWorker)``)."""


@dataclass
class EvalHandlerFactory:
    """Picklable: travels to the actors, which call it once."""

    stage_json: str

    def __call__(self) -> "CallHandler":
        config = EvaluateStage.model_validate_json(self.stage_json)
        endpoints = {c.name: (make_backend(c.chat), c.sampling) for c in config.candidates}
        endpoints[JUDGE] = (make_backend(config.judge.chat), config.judge.sampling)
        return CallHandler(endpoints, VerdictProtocols(config.judge.structured_output, config.judge.format_reminder))


@dataclass(frozen=True)
class VerdictProtocols:
    """How judge replies are asked for and read: the evaluation's pairwise and single protocols. Another
    job's judge (e.g. the preferences job's aspect ratings) brings its own ``parse`` / ``response_format``."""

    structured_output: str  # auto / json_schema / text
    format_reminder: str

    def parse(self, protocol: str, text: str) -> str | None:
        return parse_verdict(protocol, text)

    def response_format(self, protocol: str) -> dict:
        return response_format(protocol)


class CallHandler:
    """Answers (``kind`` answer) and judgments (``kind`` a judge protocol) on named endpoints, each a
    (ChatBackend, Sampling); the judge's endpoint is named ``judge``."""

    def __init__(self, endpoints: dict, protocols):
        self.endpoints, self.protocols = endpoints, protocols
        self.structured = protocols.structured_output != "text"

    async def run(self, row: dict) -> dict:
        started, started_at = time.monotonic(), time.time()
        record = {"key": row["key"], "kind": row["kind"], "endpoint": row["endpoint"], "status": "ok", "text": "",
                  "verdict": "", "structured": False, "finish_reason": "", "prompt_tokens": 0,
                  "completion_tokens": 0, "attempts": 0, "error": "", "model": "", "started_at": started_at}
        messages = json.loads(row["messages"])
        try:
            if row["kind"] == ANSWER:
                reply = await self._call(record, row["endpoint"], messages, None)
            else:
                reply = await self._judge(record, row["kind"], messages)
        except ChatError as err:
            record.update(status=f"failed:{err.reason}", error=str(err))
            reply = None
        if reply is not None:
            record.update(text=reply.text, finish_reason=reply.finish_reason, model=reply.model)
        record["seconds"] = round(time.monotonic() - started, 3)
        return record

    async def _call(self, record: dict, endpoint: str, messages: list[dict], schema: dict | None) -> ChatResult:
        backend, sampling = self.endpoints[endpoint]
        record["attempts"] += 1
        reply = await backend.chat(messages, sampling, **({"response_format": schema} if schema else {}))
        record["prompt_tokens"] += reply.prompt_tokens
        record["completion_tokens"] += reply.completion_tokens
        observability.record_tokens(f"evaluate_{record['kind']}", reply.prompt_tokens, reply.completion_tokens)
        return reply

    async def _judge(self, record: dict, protocol: str, messages: list[dict]) -> ChatResult:
        reply = await self._judge_once(record, protocol, messages)
        verdict = self.protocols.parse(protocol, reply.text)
        if verdict is None:  # once more, showing the judge its reply and the format
            retry = messages + [{"role": "assistant", "content": reply.text},
                                {"role": "user", "content": self.protocols.format_reminder}]
            reply = await self._judge_once(record, protocol, retry)
            verdict = self.protocols.parse(protocol, reply.text)
        if verdict is None:
            record.update(status="unparseable", error=f"no {protocol} verdict in the reply after "
                                                      f"{record['attempts']} attempts (finish_reason={reply.finish_reason})")
        else:
            record["verdict"] = verdict
        return reply

    async def _judge_once(self, record: dict, protocol: str, messages: list[dict]) -> ChatResult:
        if self.structured:
            try:
                reply = await self._call(record, JUDGE, messages, self.protocols.response_format(protocol))
                record["structured"] = True
                return reply
            except ChatError as err:
                if self.protocols.structured_output != "auto" or not (
                        err.reason == "http_400" and schema_rejected(str(err))):
                    raise
                logger.warning("judge endpoint refused the JSON-schema request (%s); asking in plain text from "
                               "now on (judge.structured_output: text skips the attempt)", err)
                self.structured = False
        record["structured"] = False
        return await self._call(record, JUDGE, messages, None)

    def failed(self, row: dict, reason: str, error: str) -> dict:
        return {"key": row["key"], "kind": row["kind"], "endpoint": row["endpoint"], "status": f"failed:{reason}",
                "text": "", "verdict": "", "structured": False, "finish_reason": "", "prompt_tokens": 0,
                "completion_tokens": 0, "attempts": 0, "error": error, "model": "", "started_at": time.time(),
                "seconds": 0.0}

    def counts(self, records: list[dict]) -> Counter:
        # ok / unparseable / failed come from the pool's own status counts
        counts: Counter = Counter()
        for r in records:
            counts["tokens_in"] += r["prompt_tokens"]
            counts["tokens_out"] += r["completion_tokens"]
        return counts

    def observe(self, records: list[dict]) -> None:
        pass  # tokens are recorded per call (observability.record_tokens)

    def close(self) -> None:
        shutdown_engines()  # in-actor vLLM endpoints (the preferences job's); HTTP clients close with the actor


def describe_calls(c: Counter, total: int, elapsed: float) -> str:
    return (f"calls {c['done']}/{total} (ok {c['ok']}, unparseable {c['unparseable']}, failed {c['failed']}) | "
            f"tokens in {c['tokens_in']} out {c['tokens_out']} | {c['done'] / elapsed:.2f} calls/s")
