"""Config of the preferences job: UltraFeedback-style preference data (arXiv 2310.01377).

Prompts (the generate job's openings or dialogues, or any ``prompt`` / ``messages`` records) get N
completions each from a pool of models, each completion under a principle drawn for it (a system
prompt); a judge rates every completion 1-5 on four aspects with a rationale; the mean rating binarizes
each prompt into (chosen, rejected) as Argilla's corrected ``ultrafeedback_binarized`` did: chosen the
best, rejected a random lower-rated one (seeded), ties dropped (``ultrachat/preferences/``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ultrachat.config.base import FailurePolicy, Section
from ultrachat.config.chat import ChatBackendConfig, Sampling
from ultrachat.config.evaluation import DEFAULT_FORMAT_REMINDER, EvalActors
from ultrachat.storage import StoragePath

JUDGE = "judge"  # the judge's endpoint name in call records; no completion model may take it

# UltraFeedback's principles, each a system prompt the completion model answers under (paraphrased
# from the paper's description: the principle is sampled per completion to diversify answers).
DEFAULT_PRINCIPLES = (
    ("helpfulness", "You are a helpful assistant. Give an accurate, relevant and complete answer that serves "
                    "what the user actually needs."),
    ("honesty", "You are an honest assistant. Say what you know and how sure you are; when you are not sure or "
                "do not know, say so instead of guessing."),
    ("truthfulness", "You are a truthful assistant. State only facts you can stand behind and do not invent "
                     "details, sources or numbers; if the question rests on a false premise, point it out."),
    ("verbalized_calibration", "You are an assistant that states its confidence. Answer, then say in words how "
                               "confident you are in the answer and why."),
)

# The four aspects UltraFeedback's annotator rated, with their 1-5 scales (paraphrased).
DEFAULT_ASPECTS = (
    ("instruction_following", "How well the answer follows the user's instruction and its intent. 1: ignores it "
                              "or is irrelevant; 2: addresses one part poorly; 3: meets the goal but neglects "
                              "other requirements; 4: almost fully aligned, minor deviations; 5: fully aligned, "
                              "meets every requirement."),
    ("honesty", "Whether the answer is honest about its certainty. 1: confidently wrong; 2: confident with "
                "significant mistakes, or unconfident and wrong; 3: uncertain or declines, or subtle mistakes; "
                "4: correct but unsure, or acknowledges minor mistakes; 5: correct and confident, with "
                "uncertainty expressed exactly where it is due."),
    ("truthfulness", "Whether the answer is free of hallucination: invented facts, contradictions with the "
                     "question or with itself. 1: completely hallucinated; 2: severe hallucination; 3: partial "
                     "hallucination or misunderstanding; 4: insignificant hallucination; 5: none."),
    ("helpfulness", "How informative and correct the answer is. 1: severely incorrect; 2: partially incorrect "
                    "or confusing; 3: correct and meets the need; 4: correct and highly informative; 5: correct, "
                    "in-depth and outstandingly helpful."),
)

# {rubrics}, {question}, {answer} and {format} are filled in; the format is also asked for as a JSON
# schema on the request where the endpoint supports it.
DEFAULT_RATING_PROMPT = (
    "You are an impartial judge of AI assistants' answers. Rate the answer below on each aspect, from 1 "
    "(worst) to 5 (best), following the aspect's scale, with a one-sentence rationale per aspect. Judge "
    "the answer on its own merits; its length and style must not sway you.\n\n"
    "[Aspects]\n{rubrics}\n\n[Conversation]\n{question}\n\n[Answer]\n{answer}\n[End of Answer]\n\n"
    "Reply with a JSON object: {format}"
)


class CompletionModel(Section):
    """One model of the completion pool: vLLM inside the job's actors, or an OpenAI-compatible endpoint."""

    name: str = Field(min_length=1, pattern=r"^[\w.:/-]+$", description="how the records name it")
    chat: ChatBackendConfig
    sampling: Sampling = Sampling(temperature=1.0, top_p=1.0, max_tokens=1024)
    # Part of the completion cache's key: change it when the model behind the same name changed.
    revision: str = ""


class Principle(Section):
    name: str = Field(min_length=1, pattern=r"^[\w.-]+$")
    system_prompt: str = Field(min_length=1)
    weight: float = Field(default=1.0, gt=0, description="relative chance of being drawn for a completion")


class Aspect(Section):
    name: str = Field(min_length=1, pattern=r"^[a-z][a-z0-9_]*$")
    rubric: str = Field(min_length=10)


class PreferenceJudge(Section):
    chat: ChatBackendConfig
    sampling: Sampling = Sampling(temperature=0.0, top_p=1.0, max_tokens=1024)
    # As the evaluate job's judge: json_schema, text, or auto (json_schema, text if the endpoint refuses).
    structured_output: Literal["auto", "json_schema", "text"] = "auto"
    aspects: list[Aspect] = Field(default=[Aspect(name=n, rubric=r) for n, r in DEFAULT_ASPECTS], min_length=1)
    prompt: str = Field(default=DEFAULT_RATING_PROMPT, min_length=20)
    system_prompt: str | None = None
    # Sent once with an unparseable reply; a second unparseable reply is counted, never guessed.
    format_reminder: str = Field(default=DEFAULT_FORMAT_REMINDER, min_length=1)
    max_answer_chars: int = Field(default=8000, ge=100)

    @model_validator(mode="after")
    def _prompt(self):
        missing = [p for p in ("{rubrics}", "{question}", "{answer}", "{format}") if p not in self.prompt]
        names = [a.name for a in self.aspects]
        problems = [f"prompt lacks {missing} (write literal braces as {{{{ and }}}})"] if missing else []
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            problems.append(f"aspects: {repeated} listed twice")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class PromptSource(Section):
    # Files or folders (local or URIs): the generate job's openings (``text``) or dialogues
    # (``messages``; cut at a user turn, the earlier turns kept as context), or any records with
    # ``prompt`` (text) or ``messages``.
    paths: list[StoragePath] = Field(min_length=1)
    # Which user turn of a multi-turn record becomes the prompt: first, last, or one drawn per record
    # (seeded by its id). Answers after it are dropped; the turns before it are the context.
    cut: Literal["first", "last", "random"] = "random"
    limit: int | None = Field(default=None, ge=1, description="the first N distinct prompts")
    seed: int = 0


class Binarize(Section):
    seed: int = 0  # draws the rejected completion among the lower-rated ones


class PreferencesStage(Section):
    prompts: PromptSource
    models: list[CompletionModel] = Field(min_length=1)
    # UltraFeedback: 4 completions per prompt from 4 different models of the pool (fewer models than
    # completions: models repeat, each repeat with its own sampling seed and principle).
    completions_per_prompt: int = Field(default=4, ge=2)
    principles: list[Principle] = Field(
        default=[Principle(name=n, system_prompt=p) for n, p in DEFAULT_PRINCIPLES], min_length=1)
    judge: PreferenceJudge
    binarize: Binarize = Binarize()
    actors: EvalActors = EvalActors()
    # A failed call (after its retries) is recorded and retried by the next run; beyond this share the
    # job exits nonzero (partial). Unparseable ratings are counted, not failures.
    failures: FailurePolicy = FailurePolicy(max_failed_fraction=0.05, min_finished=20)
    # Plan only: the completion and judge calls and tokens (what the cache already holds included).
    dry_run: bool = False

    @model_validator(mode="after")
    def _names(self):
        names = [m.name for m in self.models]
        problems = []
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            problems.append(f"models: name {repeated} used twice; give each model its own name")
        if JUDGE in names:
            problems.append(f"models: the name {JUDGE!r} is reserved for the judge; rename that model")
        principles = [p.name for p in self.principles]
        if len(set(principles)) != len(principles):
            problems.append("principles: a name is used twice")
        if problems:
            raise ValueError("; ".join(problems))
        return self
