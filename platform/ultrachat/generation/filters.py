"""Post-processing of one generated dialogue: drop or trim what should not become training data.

UltraChat excluded merely polite user turns ("Thank you", "Thanks") with the assistant's "You're
welcome"; ultrachat_200k later truecased the text and removed dialogues whose assistant claims to have
no emotions or opinions ("I do not have emotions"). The other filters catch failures of the
simulation itself: a user simulator that slips into the assistant role, an assistant that disclaims
being an AI, empty or max_tokens-cut turns, degenerate repetition.

Order: empty_turn (drop), then the trims (unanswered_turn, feelings_disclaimer when "trim",
user_role_slip, polite_closing, length_cut), then the drops that look at what survived (repetition,
feelings_disclaimer when "drop", assistant_disclaimer), so content a trim removes never drops a
dialogue; last, truecase rewrites the generated turns that are kept (the opening line is input). A trimmed dialogue always ends with an assistant turn and keeps at least one full
round, otherwise it is dropped with the reason of the filter that emptied it.

Reasons: "empty_turn", "feelings_disclaimer", "user_role_slip", "polite_closing", "length_cut",
"repetition", "assistant_disclaimer" and "unanswered_turn" (a trailing user turn nobody answered); a
trim records "trimmed:<reason>", a drop records "<reason>" and sets status "filtered:<reason>", and a
truecased dialogue records "rewritten:truecase". The generate job's summary counts every reason.

Patterns are case-insensitive and see text with typographic apostrophes (’) turned into '. Extra
config patterns are searched anywhere in a turn, except polite_closing ones: a user turn is split into
clauses at punctuation (, . ; : ! ? dashes and newlines; other punctuation is removed) and an extra
pattern must match a whole clause or all of the turn's words, so "Thanks! Can you also ...?" is never
mistaken for mere thanks.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from ultrachat.config.generation import Filters
from ultrachat.generation.truecase import truecase

_ANY_AI = r"(?:an? )?(?:ai|artificial intelligence|(?:large )?language model|ai language model|ai assistant|chatbot|virtual assistant)"
USER_ROLE_SLIP = (
    r"\bas an? (?:ai|artificial intelligence)\b",
    r"\bas a (?:large |ai )?language model\b",
    rf"\bi(?:'m| am) (?:just |only |merely )?{_ANY_AI}\b",
    r"\bhow (?:can|may|could|else can) i (?:help|assist) you\b",
    r"\bwhat can i (?:help you with|do for you)\b",
    r"\b(?:is there )?anything else (?:that )?i (?:can|could|may) (?:help|assist) you with\b",
    r"\bif you have any (?:other|more|further|additional) questions\b",
    r"\bi'd be (?:happy|glad|delighted) to (?:help|assist)\b",
    r"\bi hope (?:this|that|my (?:answer|response|explanation)) (?:helps|was helpful|is helpful)\b",
    r"^\W*(?:sure|certainly|of course|absolutely)\W+(?:here's|here is|here are|below is)\b",
    r"^\W*(?:great|good|excellent) question\b",
    r"^\W*you're (?:very |most )?welcome\b",
    # The helper's voice that small simulators slip into (measured on SmolLM2-135M's user turns).
    r"\bi(?:'m| am) (?:so |really |very |truly )?(?:glad|happy|sorry) to hear (?:that|about|you)\b",
    r"\bi(?:'m| am) (?:so |really )?glad (?:that )?you(?:'re| are) (?:taking|interested|asking|here|enjoying|reaching)\b",
    r"\bi(?:'m| am) here to (?:help|assist|offer|support|provide|answer)\b",
    r"\bi(?:'ll| will) do my best to (?:help|assist|answer)\b",
    r"\bi(?:'m| am) (?:more than |always )?(?:happy|glad|delighted) to (?:help|assist)\b",
    r"\bi(?:'m| am) sorry for (?:the|any) (?:confusion|misunderstanding|inconvenience)\b",
    r"\blet me know if you (?:have|need|want|would like)\b",
)
ASSISTANT_DISCLAIMER = (
    # "As an AI researcher, you ..." is advice, not a disclaimer: require a comma or "I"/"my" next.
    r"\bas an? (?:ai|artificial intelligence)(?: (?:language )?(?:model|assistant|chatbot|system|program))?(?:\s*,|\s+(?:i|my|i'm)\b)",
    r"\bas a (?:large |ai )?language model\b",
    r"\bi(?:'m| am) (?:just |only |merely |simply )?(?:an? )?(?:ai|artificial intelligence|(?:large )?language model|computer program|machine)\b",
)
# An assistant turn that claims to have no emotions or opinions: ultrachat_200k's second cleanup.
FEELINGS_DISCLAIMER = (
    r"\bi (?:do not|don't|cannot|can't|am not able to|am unable to|am not capable of|am incapable of) "
    r"(?:have|having|possess|experience|experiencing|feel|feeling|hold|form|forming)(?: \w+){0,4}? "
    r"(?:(?:personal |subjective |my own |own )?(?:opinions?|emotions?|feelings?|preferences?|beliefs?|consciousness|desires)"
    r"|personal (?:experiences?|life|tastes?))\b",
)

# A polite user turn is made only of clauses like these (fullmatch), with at least one THANKS clause.
_LEAD = r"(?:(?:oh|ah|ok|okay|alright|all right|great|perfect|awesome|wow|cool|nice|excellent|wonderful|amazing|fantastic|yes|yeah|well|and|again) )*"
_MORE = r"(?: (?:so much|very much|a lot|a ton|a bunch|a million|again|once again|kindly|indeed|so so much))*"
# "for ..." takes the rest of the clause unless it carries a request ("thanks for that now tell me ...").
_FOR = r"(?: (?:to you )?for (?!.*\b(?:now|next|also|can you|could you|would you|will you|please|tell me|show me|give me|explain|help me|what about|how about|let's|i want|i need|i'd like)\b).{1,120})?"
POLITE_THANKS = (
    rf"{_LEAD}(?:thank(?:s| you| u)|thx|ty|tysm|cheers|many thanks|much appreciated){_MORE}{_FOR}{_MORE}",
    rf"{_LEAD}(?:i |we )?(?:really |truly |greatly |sincerely |do )?appreciate (?:it|that|this|you|your (?:help|time|assistance|advice|answers?|response)|all (?:of )?(?:this|that|your help)){_MORE}",
    rf"{_LEAD}(?:i'm|i am) (?:so |very |really |truly )?(?:grateful|thankful){_FOR}",
    r"(?:that|this|it|your (?:answer|explanation|response|advice)|the information)(?:'s| is| was| has been) (?:(?:very|really|so|super|incredibly|extremely|quite|exactly) )?(?:helpful|useful|informative|great|perfect|what i needed|what i was looking for)",
    r"(?:you've|you have) been (?:a |such a )?(?:(?:very|really|so|super|great|big|huge|tremendous) )?(?:help|helpful)",
    r"(?:that|this) helps(?: a lot)?|you're (?:the best|awesome|amazing|a lifesaver)",
    r"(?:that's|that is) (?:(?:very|so|really) )?(?:kind|nice|sweet) of you",
)
POLITE_FILLER = (
    r"(?:oh |ah )?(?:ok|okay|alright|all right|got it|i see|understood|(?:that )?makes sense|perfect|great|awesome|cool|nice|excellent|wonderful|fantastic|amazing|sounds (?:good|great)|good to know|noted|will do|sure|yes|yeah|wow)",
    r"(?:bye|goodbye|good bye|see you|see ya|take care|have a (?:great|good|nice|wonderful|lovely) (?:day|night|evening|weekend|one))",
    r"(?:i'll|i will) (?:\w+ ){0,2}(?:try|keep|give|check|look into|use|follow|consider|remember) (?:that|this|it|them|these|those|your \w+)(?: \w+){0,4}",
)
_CLAUSE_SPLIT = re.compile(r"[,.;:!?\n\u2013\u2014]+")
_AND_SPLIT = re.compile(r"\s+(?:and|&)\s+")
_NON_WORD = re.compile(r"[^\w\s']+")
POLITE_MAX_WORDS = 60

_WORD = re.compile(r"\w+(?:'\w+)*")
_SEGMENT_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
REPETITION_MIN_WORDS = 20  # shorter turns have too few n-grams for a share to mean anything
REPETITION_MAX_RUN = 8  # "very very very ..." 8 times in a row is never intended


@dataclass(frozen=True)
class FilterOutcome:
    messages: list[dict]
    status: str  # "kept" or "filtered:<first dropping reason>"
    reasons: list[str]  # every filter that acted, in order: "trimmed:<reason>" or "<reason>"

    @property
    def kept(self) -> bool:
        return self.status == "kept"


class DialogueFilter:
    """The filters of one config, regexes compiled once (build one per actor, call per dialogue)."""

    def __init__(self, config: Filters):
        self.config = config
        self.role_slip = _compile(USER_ROLE_SLIP, config.user_role_slip_patterns, "user_role_slip_patterns")
        self.disclaimer = _compile(ASSISTANT_DISCLAIMER, config.assistant_disclaimer_patterns,
                                   "assistant_disclaimer_patterns")
        self.polite_extra = _compile((), config.polite_closing_patterns, "polite_closing_patterns")
        self.polite_thanks = _compile(POLITE_THANKS, []) + self.polite_extra
        self.polite_filler = _compile(POLITE_FILLER, [])
        self.feelings = _compile(FEELINGS_DISCLAIMER, config.feelings_disclaimer_patterns,
                                 "feelings_disclaimer_patterns")

    def __call__(self, messages: list[dict], finish_reasons: list[str | None]) -> FilterOutcome:
        _check_shape(messages, finish_reasons)
        cfg, turns, reasons = self.config, list(zip(messages, finish_reasons)), []
        if cfg.empty_turn and any(not m["content"].strip() for m, _ in turns):
            return _drop(turns, reasons, "empty_turn")
        trims = [("unanswered_turn", _trim_unanswered)]
        if cfg.feelings_disclaimer == "trim":
            trims.append(("feelings_disclaimer", self._trim_feelings))
        if cfg.user_role_slip:
            trims.append(("user_role_slip", self._trim_role_slip))
        if cfg.polite_closing:
            trims.append(("polite_closing", self._trim_polite))
        if cfg.length_cut:
            trims.append(("length_cut", _trim_length_cut))
        for reason, trim in trims:
            trimmed = trim(turns)
            if trimmed is None:
                continue
            if not _has_full_round(trimmed):
                return _drop(turns, reasons, reason)
            turns = trimmed
            reasons.append(f"trimmed:{reason}")
        generated = [m for m, _ in turns[1:]]  # the opening line was not generated
        if cfg.repetition and any(_is_degenerate(m["content"], cfg.repetition_max_share) for m in generated):
            return _drop(turns, reasons, "repetition")
        answers = [m["content"] for m in generated if m["role"] == "assistant"]
        if cfg.feelings_disclaimer == "drop" and any(_matches(self.feelings, text) for text in answers):
            return _drop(turns, reasons, "feelings_disclaimer")
        if cfg.assistant_disclaimer and any(_matches(self.disclaimer, text) for text in answers):
            return _drop(turns, reasons, "assistant_disclaimer")
        messages = [m for m, _ in turns]
        if cfg.truecase:  # last, on what is kept; the opening line is input, kept as given
            cased = messages[:1] + [{**m, "content": truecase(m["content"])} for m in messages[1:]]
            if cased != messages:
                messages = cased
                reasons.append("rewritten:truecase")
        return FilterOutcome(messages, "kept", reasons)

    def _trim_role_slip(self, turns):
        # Everything after a slip is the model talking to itself; earlier rounds are still good.
        for i in range(2, len(turns), 2):
            if _matches(self.role_slip, turns[i][0]["content"]):
                return turns[:i]
        return None

    def _trim_feelings(self, turns):
        # The round whose answer disclaims feelings goes, and the rounds after it, which build on it.
        for i in range(1, len(turns), 2):
            if _matches(self.feelings, turns[i][0]["content"]):
                return turns[:i - 1]
        return None

    def _trim_polite(self, turns):
        # The polite user turn goes with the assistant's answer to it ("You're welcome! ...").
        polite = {i for i in range(2, len(turns), 2) if self.is_polite(turns[i][0]["content"])}
        if not polite:
            return None
        return [t for i, t in enumerate(turns) if i not in polite and i - 1 not in polite]

    def is_polite(self, text: str) -> bool:
        """True when a user turn is nothing but thanks (plus acknowledgements or goodbyes)."""
        text = _normalize(text)
        if "?" in text or len(_WORD.findall(text)) > POLITE_MAX_WORDS:
            return False
        clauses = _clauses(text)
        if any(p.fullmatch(" ".join(clauses)) for p in self.polite_extra):
            return True
        kinds = [self._clause_kind(c) for c in clauses]
        return bool(kinds) and None not in kinds and "thanks" in kinds

    def _clause_kind(self, clause: str) -> str | None:
        kind = self._piece_kind(clause)
        sides = _AND_SPLIT.split(clause)
        if kind or len(sides) == 1:
            return kind
        # "thanks and have a nice day": every side of the "and" must be polite on its own.
        kinds = [self._piece_kind(side) for side in sides]
        return None if None in kinds else ("thanks" if "thanks" in kinds else "filler")

    def _piece_kind(self, piece: str) -> str | None:
        if any(p.fullmatch(piece) for p in self.polite_thanks):
            return "thanks"
        if any(p.fullmatch(piece) for p in self.polite_filler):
            return "filler"
        return None


def apply_filters(messages: list[dict], finish_reasons: list[str | None], config: Filters) -> FilterOutcome:
    """One-off convenience; in a loop build a DialogueFilter once instead (it compiles the regexes)."""
    return DialogueFilter(config)(messages, finish_reasons)


def _compile(builtin, extra: list[str], key: str = "") -> list[re.Pattern]:
    compiled = [re.compile(p, re.IGNORECASE) for p in builtin]
    for i, pattern in enumerate(extra):
        try:
            compiled.append(re.compile(pattern, re.IGNORECASE))
        except re.error as err:
            raise ValueError(f"filters.{key}[{i}]: invalid regex {pattern!r}: {err}") from None
    return compiled


def _check_shape(messages, finish_reasons) -> None:
    if not messages:
        raise ValueError("a dialogue has at least its opening line")
    if len(messages) != len(finish_reasons):
        raise ValueError(f"{len(messages)} messages but {len(finish_reasons)} finish reasons")
    for i, message in enumerate(messages):
        expected = "user" if i % 2 == 0 else "assistant"
        if message.get("role") != expected:
            raise ValueError(f"message {i} has role {message.get('role')!r}, expected {expected!r}")


def _drop(turns, reasons: list[str], reason: str) -> FilterOutcome:
    # The dialogue as it stood when dropped, so the record still shows what the filter objected to.
    return FilterOutcome([m for m, _ in turns], f"filtered:{reason}", reasons + [reason])


def _has_full_round(turns) -> bool:
    return len(turns) >= 2


def _trim_unanswered(turns):
    return turns[:-1] if turns and turns[-1][0]["role"] == "user" else None


def _trim_length_cut(turns):
    cut = [i for i, (_, finish) in enumerate(turns) if finish == "length"]
    if not cut:
        return None
    last_round = len(turns) - 2  # turns end with an assistant turn here (unanswered ones are trimmed)
    # A cut in an earlier round would leave later turns answering a fragment: nothing to salvage.
    return turns[:last_round] if min(cut) >= last_round else []


def _normalize(text: str) -> str:
    return text.replace("\u2019", "'").strip()


def _matches(patterns: list[re.Pattern], text: str) -> bool:
    text = _normalize(text)
    return any(p.search(text) for p in patterns)


def _clauses(text: str) -> list[str]:
    parts = (" ".join(_NON_WORD.sub(" ", c).split()) for c in _CLAUSE_SPLIT.split(text))
    return [p for p in parts if p]  # emoji- or punctuation-only pieces say nothing


def _is_degenerate(text: str, max_share: float) -> bool:
    # Numbers are left out: a matrix or table of zeros is legitimate output, not a loop.
    words = [w for w in _WORD.findall(text.lower()) if not w.isdigit()]
    if _longest_run(words) >= REPETITION_MAX_RUN:
        return True
    if len(words) < REPETITION_MIN_WORDS:
        return False
    return _ngram_share(words, 3) > max_share or _segment_share(text, len(words)) > max_share


def _longest_run(words: list[str]) -> int:
    best = run = 0
    for i, word in enumerate(words):
        run = run + 1 if i and word == words[i - 1] else 1
        best = max(best, run)
    return best


def _ngram_share(words: list[str], n: int) -> float:
    """Share of the tokens covered by the most frequent n-gram (overlapping copies counted once)."""
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    top, count = Counter(grams).most_common(1)[0]
    if count < 2:
        return 0.0
    covered = {j for i, gram in enumerate(grams) if gram == top for j in range(i, i + n)}
    return len(covered) / len(words)


def _segment_share(text: str, total_words: int) -> float:
    """Share of the tokens in copies of the most repeated line or sentence, if repeated 3+ times
    (a refrain used twice, or a chorus, is normal in poems and songs)."""
    segments = [tuple(w for w in _WORD.findall(s.lower()) if not w.isdigit())
                for s in _SEGMENT_SPLIT.split(text)]
    counts = Counter(s for s in segments if s)
    if not counts:
        return 0.0
    top, count = counts.most_common(1)[0]
    return count * len(top) / total_words if count >= 3 else 0.0
