"""The prompt set: the paper's 385 (packaged) or a user's JSONL, checked line by line.

Every prompt becomes ``{id, class, messages}``: ``messages`` is the conversation the candidates
answer (a single-turn prompt is one user message; a multi-turn one ends with the user turn to answer).
Problems are collected over the whole file and reported at once, each with its file and line.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from importlib import resources

from ultrachat import storage
from ultrachat.config.evaluation import PACKAGED_PROMPTS, PromptSet
from ultrachat.errors import InputError

logger = logging.getLogger(__name__)

_SHOWN_PROBLEMS = 20


@dataclass(frozen=True)
class Prompt:
    id: str
    klass: str
    messages: tuple[tuple[str, str], ...]  # (role, content) pairs, ending with a user turn

    @property
    def question(self) -> str:
        """What the judge is shown as the question: the conversation, or its one user turn."""
        if len(self.messages) == 1:
            return self.messages[0][1]
        return "\n\n".join(f"{role.upper()}: {text}" for role, text in self.messages)

    def chat_messages(self) -> list[dict[str, str]]:
        return [{"role": role, "content": text} for role, text in self.messages]


def load_prompts(config: PromptSet) -> list[Prompt]:
    """The selected prompts in file order; InputError naming every bad line, or an unknown class."""
    if config.path == PACKAGED_PROMPTS:
        source = "package:ultra_eval (ultrachat/data/ultra_eval.json)"
        prompts = _paper_prompts()
    else:
        source = config.path
        if not storage.exists(config.path):
            raise InputError(f"prompts.path: {config.path} does not exist. Fix: give a JSONL file of "
                             f"{{id, class, prompt}} or {{id, class, messages}}, or {PACKAGED_PROMPTS}")
        prompts = _parse_jsonl(config.path, storage.read_text(config.path))
    known = sorted({p.klass for p in prompts})
    unknown = [c for c in config.classes if c not in known]
    if unknown:
        raise InputError(f"prompts.classes: {unknown} not in {source}; its classes are {known}")
    if config.classes:
        prompts = [p for p in prompts if p.klass in config.classes]
    if config.per_class is not None:
        taken: dict[str, int] = {}
        kept = []
        for prompt in prompts:
            taken[prompt.klass] = taken.get(prompt.klass, 0) + 1
            if taken[prompt.klass] <= config.per_class:
                kept.append(prompt)
        prompts = kept
    if config.limit is not None:
        prompts = prompts[: config.limit]
    logger.info("prompts: %d from %s in %d classes", len(prompts), source, len({p.klass for p in prompts}))
    return prompts


def _paper_prompts() -> list[Prompt]:
    raw = json.loads(resources.files("ultrachat.data").joinpath("ultra_eval.json").read_text("utf-8"))
    counters: dict[str, int] = {}
    prompts = []
    for item in raw:
        klass = item["class"].strip()  # the file pads class names with spaces
        counters[klass] = counters.get(klass, 0) + 1
        slug = klass.lower().replace(" ", "-")
        prompts.append(Prompt(f"{slug}-{counters[klass]:03d}", klass, (("user", item["data"].strip()),)))
    return prompts


def _parse_jsonl(path: str, text: str) -> list[Prompt]:
    prompts, problems, first_line = [], [], {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append(f"{where}: not JSON ({err.msg})")
            continue
        prompt = _prompt(record, where, problems)
        if prompt is None:
            continue
        if prompt.id in first_line:
            problems.append(f"{where}: duplicate id {prompt.id!r} (first on line {first_line[prompt.id]})")
            continue
        first_line[prompt.id] = number
        prompts.append(prompt)
    if problems:
        shown = "\n  ".join(problems[:_SHOWN_PROBLEMS])
        more = f"\n  ... and {len(problems) - _SHOWN_PROBLEMS} more" if len(problems) > _SHOWN_PROBLEMS else ""
        raise InputError(f"prompts.path: {len(problems)} bad line(s) in {path}:\n  {shown}{more}\nFix: each line is "
                         f'{{"id": "...", "class": "...", "prompt": "..."}} or {{"id", "class", "messages": '
                         f'[{{"role": "user", "content": "..."}}, ...]}} with unique ids')
    if not prompts:
        raise InputError(f"prompts.path: {path} holds no prompts")
    return prompts


def _prompt(record: object, where: str, problems: list[str]) -> Prompt | None:
    if not isinstance(record, dict):
        problems.append(f"{where}: a JSON object expected")
        return None
    found = []
    for key in ("id", "class"):
        value = record.get(key)
        if isinstance(value, (int, float)) and key == "id":
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            found.append(f"missing or empty '{key}'")
    if "prompt" in record and "messages" in record:
        found.append("both 'prompt' and 'messages'; give one")
    elif "prompt" in record:
        if not isinstance(record["prompt"], str) or not record["prompt"].strip():
            found.append("'prompt' must be a non-empty string")
    elif "messages" in record:
        found += _message_problems(record["messages"])
    else:
        found.append("neither 'prompt' nor 'messages'")
    if found:
        problems.append(f"{where}: {'; '.join(found)}")
        return None
    if "prompt" in record:
        messages = (("user", record["prompt"].strip()),)
    else:
        messages = tuple((m["role"], m["content"]) for m in record["messages"])
    return Prompt(str(record["id"]).strip(), record["class"].strip(), messages)


def _message_problems(messages: object) -> list[str]:
    if not isinstance(messages, list) or not messages:
        return ["'messages' must be a non-empty list of {role, content}"]
    for index, message in enumerate(messages):
        if (not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant")
                or not isinstance(message.get("content"), str) or not message["content"].strip()):
            return [f"messages[{index}] must be {{role: system|user|assistant, content: non-empty text}}"]
    if messages[-1]["role"] != "user":
        return ["the last message must be the user turn the candidates answer"]
    return []
