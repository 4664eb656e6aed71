"""Config of the evaluate job: which models answer (candidates), who judges them and how, on which
prompts (``ultrachat/evaluation/``). Every endpoint is OpenAI-compatible and called through the
platform's OpenAI backend (concurrency, RPM/TPM limits, retries)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ultrachat.config.base import FailurePolicy, PoolResources, Section
from ultrachat.config.chat import OpenAIBackend, Sampling

# The paper's 385 prompts in 10 classes, shipped in the package (data/ultra_eval.json, MIT, see
# data/ultra_eval_SOURCE.txt).
PACKAGED_PROMPTS = "package:ultra_eval"
JUDGE = "judge"  # the judge's endpoint name in call records; no candidate may take it

# The paper's judge prefers correctness over informativeness; both rubrics say so. {question},
# {answer}, {answer_a}, {answer_b} are filled in; the reply format is asked for twice, here in words
# and (where the endpoint supports it) as a JSON schema on the request.
DEFAULT_PAIRWISE_PROMPT = (
    "You are an impartial judge. Compare the two AI assistants' answers to the user's question below and "
    "decide which one is better. Correctness comes first: an answer with a factual, logical or "
    "mathematical error loses to a correct one, however much more informative, detailed or long it is. "
    "Among answers equally correct, prefer the more helpful, relevant and clear one. Do not let the "
    "order of the answers, their length or the assistants' names sway you. If they are equally good "
    "(or equally bad), say tie.\n\n"
    "[Question]\n{question}\n\n[Answer A]\n{answer_a}\n[End of Answer A]\n\n[Answer B]\n{answer_b}\n"
    "[End of Answer B]\n\n"
    "Reply with a JSON object: {{\"reason\": \"<one or two sentences>\", \"verdict\": \"A\" | \"B\" | \"tie\"}}."
)
DEFAULT_SINGLE_PROMPT = (
    "You are an impartial judge. Rate the AI assistant's answer to the user's question below on a scale "
    "of 1 to 10. Correctness comes first: an answer with a factual, logical or mathematical error scores "
    "at most 5 however informative it is; then helpfulness, relevance, depth and clarity. 10 is a correct, "
    "complete and clear answer; 1 is wrong or unrelated.\n\n"
    "[Question]\n{question}\n\n[Answer]\n{answer}\n[End of Answer]\n\n"
    "Reply with a JSON object: {{\"reason\": \"<one or two sentences>\", \"score\": <integer 1-10>}}."
)
DEFAULT_FORMAT_REMINDER = (
    "Your reply did not follow the required format. Reply again with only the JSON object asked for."
)


class Candidate(Section):
    """A model under evaluation: any OpenAI-compatible endpoint (`ultrachat serve`, vLLM, a hosted API)."""

    name: str = Field(min_length=1, pattern=r"^[\w.:/-]+$", description="how the report names it")
    chat: OpenAIBackend
    sampling: Sampling = Sampling(temperature=0.7, top_p=0.95, max_tokens=1024)
    system_prompt: str | None = None
    # Part of the answer cache's key with the endpoint, model, prompt and sampling: change it when the
    # model behind the same endpoint and name changed (a new fine-tune), so its answers are asked again.
    revision: str = ""


class EvalJudge(Section):
    chat: OpenAIBackend
    sampling: Sampling = Sampling(temperature=0.0, top_p=1.0, max_tokens=512)
    # json_schema: ask for verdicts as schema-constrained JSON (`response_format`, vLLM and OpenAI);
    # text: plain text, parsed; auto: json_schema, falling back to text when the endpoint rejects it.
    # Either way the reply is parsed as JSON first, then as text ("verdict: A", "[[A]]", "Score: 7").
    structured_output: Literal["auto", "json_schema", "text"] = "auto"
    pairwise_prompt: str = Field(default=DEFAULT_PAIRWISE_PROMPT, min_length=20)
    single_prompt: str = Field(default=DEFAULT_SINGLE_PROMPT, min_length=20)
    system_prompt: str | None = None
    # Sent once with the judge's unparseable reply; a second unparseable reply is counted, never guessed.
    format_reminder: str = Field(default=DEFAULT_FORMAT_REMINDER, min_length=1)
    # Said first in the report, e.g. why this judge was used and how far to trust it.
    caveat: str | None = None
    # Each answer shown to the judge is cut to this many characters (the report counts the cut ones).
    max_answer_chars: int = Field(default=8000, ge=100)

    @model_validator(mode="after")
    def _placeholders(self):
        problems = []
        for key, needed in (("pairwise_prompt", ("{question}", "{answer_a}", "{answer_b}")),
                            ("single_prompt", ("{question}", "{answer}"))):
            missing = [p for p in needed if p not in getattr(self, key)]
            if missing:
                problems.append(f"{key} lacks {missing}")
        if problems:
            raise ValueError("; ".join(problems) + " (write literal braces as {{ and }})")
        return self


class PromptSet(Section):
    # package:ultra_eval (the paper's 385), or a JSONL file (local or s3://) of {id, class, prompt} or
    # {id, class, messages: [{role, content}, ...]} (multi-turn: the candidates answer the last user turn).
    path: str = Field(default=PACKAGED_PROMPTS, min_length=1)
    classes: list[str] = Field(default=[], description="only these classes (default: all)")
    per_class: int | None = Field(default=None, ge=1, description="the first N prompts of each class")
    limit: int | None = Field(default=None, ge=1, description="the first N prompts (after the above)")


class Bootstrap(Section):
    samples: int = Field(default=2000, ge=100)
    seed: int = 0
    confidence: float = Field(default=0.95, gt=0, lt=1)


class EvalActors(PoolResources):
    # The actors only wait on HTTP: no CPU reserved by default, so they fit beside engines that hold
    # every CPU (the pipeline's serve stage).
    num_cpus: float = Field(default=0, ge=0)
    calls_per_batch: int = Field(default=16, ge=1, description="calls per Ray Data batch (one cache shard each)")
    # Batches each actor runs at once. Calls in flight per actor = calls_per_batch x batches_in_flight,
    # capped per endpoint by its chat.max_concurrency.
    batches_in_flight: int = Field(default=8, ge=1)


class EvaluateStage(Section):
    candidates: list[Candidate] = Field(min_length=1)
    judge: EvalJudge
    prompts: PromptSet = PromptSet()
    protocols: list[Literal["pairwise", "single"]] = Field(default=["pairwise", "single"], min_length=1)
    # Pairwise: every candidate against this one; unset: every pair of candidates (in config order).
    baseline: str | None = None
    bootstrap: Bootstrap = Bootstrap()
    actors: EvalActors = EvalActors()
    # A failed call (after its retries) is recorded and retried by the next run; beyond this share of
    # failed calls the job exits nonzero (partial). Unparseable verdicts are counted, not failures.
    failures: FailurePolicy = FailurePolicy(max_failed_fraction=0.05, min_finished=20)
    # Check each endpoint (GET /v1/models) before any call: a down server or a model it does not
    # serve is a clear error at once instead of after every call's retries.
    preflight: bool = True
    plots: bool = True
    # Plan only: print the answer and judge calls and tokens (what the cache already holds included).
    dry_run: bool = False

    @model_validator(mode="after")
    def _candidates(self):
        names = [c.name for c in self.candidates]
        problems = []
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            problems.append(f"candidates: name {repeated} used twice; give each candidate its own name")
        if JUDGE in names:
            problems.append(f"candidates: the name {JUDGE!r} is reserved for the judge; rename that candidate")
        if "pairwise" in self.protocols and len(set(names)) < 2:
            problems.append("protocols: pairwise needs at least two candidates; add one or use protocols: [single]")
        if self.baseline is not None and self.baseline not in names:
            problems.append(f"baseline: {self.baseline!r} is not a candidate name (candidates: {names})")
        repeated_protocols = sorted({p for p in self.protocols if self.protocols.count(p) > 1})
        if repeated_protocols:
            problems.append(f"protocols: {repeated_protocols} listed twice")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def pairs(self) -> list[tuple[str, str]]:
        """(candidate, opponent) pairs judged pairwise; the report gives the first's win rate."""
        names = [c.name for c in self.candidates]
        if self.baseline is not None:
            return [(name, self.baseline) for name in names if name != self.baseline]
        return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
