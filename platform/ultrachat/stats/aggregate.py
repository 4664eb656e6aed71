"""Mergeable per-group aggregates: each actor fills one per batch, the driver merges them.

Everything is a sum or a histogram (a Counter), so merging is exact and the driver's memory does not
grow with the data: token counts are integers (exact medians), MTLD values are binned to 0.1 (medians
within 0.05). Groups: ``overall`` (the dataset's own row), ``sector:<s>`` (within overall) and
``status:<s>`` (every row of our generate output).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

MTLD_BIN = 0.1
PROBLEM_EXAMPLES = 5  # example sources kept per problem reason
ROLES = ("user", "assistant")


@dataclass
class Distribution:
    """Sum, count and histogram of one quantity."""

    total: float = 0.0
    n: int = 0
    hist: Counter = field(default_factory=Counter)
    bin_width: float | None = None  # None: the values are integers, kept exactly

    def add(self, value: float) -> None:
        self.total += value
        self.n += 1
        self.hist[value if self.bin_width is None else round(value / self.bin_width)] += 1

    def merge(self, other: "Distribution") -> None:
        self.total += other.total
        self.n += other.n
        self.hist.update(other.hist)

    def values(self) -> list[tuple[float, int]]:
        """(value, count) sorted; binned values are the bins' centres."""
        scale = 1 if self.bin_width is None else self.bin_width
        return sorted((key * scale, count) for key, count in self.hist.items())

    def mean(self) -> float | None:
        return self.total / self.n if self.n else None

    def median(self) -> float | None:
        if not self.n:
            return None
        seen, low, high = 0, None, None
        for value, count in self.values():
            if low is None and seen + count > (self.n - 1) // 2:
                low = value
            if seen + count > self.n // 2:
                high = value
                break
            seen += count
        return (low + high) / 2

    def summary(self, digits: int = 1) -> dict:
        mean, median = self.mean(), self.median()
        return {"mean": None if mean is None else round(mean, digits),
                "median": None if median is None else round(median, digits), "n": self.n}


@dataclass
class GroupStats:
    dialogues: int = 0
    rounds: Distribution = field(default_factory=Distribution)
    messages: int = 0
    dangling_user_turns: int = 0  # a last user message without a reply (not a round)
    system_messages: int = 0
    dialogue_tokens: Distribution = field(default_factory=Distribution)
    utterance_tokens: dict[str, Distribution] = field(default_factory=lambda: {r: Distribution() for r in ROLES})
    mtld: Distribution = field(default_factory=lambda: Distribution(bin_width=MTLD_BIN))
    mtld_by_role: dict[str, Distribution] = field(
        default_factory=lambda: {r: Distribution(bin_width=MTLD_BIN) for r in ROLES})
    mtld_dialogue: Distribution = field(default_factory=lambda: Distribution(bin_width=MTLD_BIN))
    mtld_skipped: int = 0  # utterances without a word LexicalRichness counts (empty, digits only)

    def add(self, measured: dict) -> None:
        self.dialogues += 1
        self.rounds.add(measured["rounds"])
        self.messages += len(measured["roles"])
        self.dangling_user_turns += measured["roles"][-1] == "user"
        self.system_messages += measured["system_messages"]
        self.dialogue_tokens.add(sum(measured["tokens"]))
        for role, tokens, mtld in zip(measured["roles"], measured["tokens"], measured["mtld"]):
            self.utterance_tokens[role].add(tokens)
            if mtld is None:
                self.mtld_skipped += 1
            else:
                self.mtld.add(mtld)
                self.mtld_by_role[role].add(mtld)
        if measured["mtld_dialogue"] is None:
            return
        self.mtld_dialogue.add(measured["mtld_dialogue"])

    def merge(self, other: "GroupStats") -> None:
        for name in ("dialogues", "messages", "dangling_user_turns", "system_messages", "mtld_skipped"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("rounds", "dialogue_tokens", "mtld", "mtld_dialogue"):
            getattr(self, name).merge(getattr(other, name))
        for role in ROLES:
            self.utterance_tokens[role].merge(other.utterance_tokens[role])
            self.mtld_by_role[role].merge(other.mtld_by_role[role])

    def utterances(self) -> Distribution:
        both = Distribution()
        for role in ROLES:
            both.merge(self.utterance_tokens[role])
        return both

    def summary(self) -> dict:
        utterances = self.utterances()
        return {
            "dialogues": self.dialogues,
            "avg_turns": self.rounds.summary(2)["mean"],
            "median_turns": self.rounds.median(),
            "rounds_histogram": {int(k): v for k, v in self.rounds.values()},
            "messages": self.messages,
            "dangling_user_turns": self.dangling_user_turns,
            "system_messages_ignored": self.system_messages,
            "avg_dialogue_tokens": self.dialogue_tokens.summary()["mean"],
            "median_dialogue_tokens": self.dialogue_tokens.median(),
            "avg_utterance_tokens": utterances.summary()["mean"],
            "median_utterance_tokens": utterances.median(),
            "utterance_tokens_by_role": {r: self.utterance_tokens[r].summary() for r in ROLES},
            "mtld": self.mtld.summary(),
            "mtld_by_role": {r: self.mtld_by_role[r].summary() for r in ROLES},
            "mtld_dialogue": self.mtld_dialogue.summary(),
            "mtld_skipped_utterances": self.mtld_skipped,
        }


@dataclass
class Aggregate:
    groups: dict[str, GroupStats] = field(default_factory=dict)
    rows: int = 0
    problems: Counter = field(default_factory=Counter)
    problem_examples: dict[str, list[str]] = field(default_factory=dict)

    def group(self, name: str) -> GroupStats:
        return self.groups.setdefault(name, GroupStats())

    def add_problem(self, reason: str, source: str, status: str | None) -> None:
        # Reasons differing only in position ("messages[3] has ...") or detail (in parentheses) group together.
        kind = re.sub(r"\[\d+\]", "[i]", reason.split(" (")[0])
        label = kind if status is None else f"{kind} [status {status}]"
        self.problems[label] += 1
        shown = self.problem_examples.setdefault(label, [])
        if len(shown) < PROBLEM_EXAMPLES:
            shown.append(f"{source}: {reason}")

    def merge(self, other: "Aggregate") -> None:
        self.rows += other.rows
        self.problems.update(other.problems)
        for label, shown in other.problem_examples.items():
            mine = self.problem_examples.setdefault(label, [])
            mine.extend(shown[: max(0, PROBLEM_EXAMPLES - len(mine))])
        for name, stats in other.groups.items():
            self.group(name).merge(stats)
