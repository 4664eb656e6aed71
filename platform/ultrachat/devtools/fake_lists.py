"""List replies for the fake OpenAI server: answers construction's "Write N ..." prompts with N items.

Rotates through the shapes real models use (numbered, bulleted, a JSON array, a list wrapped in chatty
prose, bold markers), picked by a hash of the prompt so runs are reproducible. Items are built from
the prompt's quoted subject plus a counter, so every item is distinct and traceable to its prompt.
"""

from __future__ import annotations

import hashlib
import json
import re

_COUNT = re.compile(r"\b(?:Write|List)\s+(\d+)\b")
_SUBJECT = re.compile(r'"([^"]{1,120})"')
_INSTRUCTION = re.compile(r"^Instruction:\s*(.+)$", re.M)
_TO_WRITE = re.compile(r"to write ([^.]{1,80})\.")
_ANGLES = ("history", "benefits", "risks", "future", "basics", "myths", "costs", "ethics", "tools", "people",
           "science", "practice", "culture", "rules", "examples", "trends", "skills", "mistakes", "data", "limits")
SHAPES = ("numbered", "bulleted", "json", "prose", "bold")


def list_reply(messages: list, shape: str | None = None) -> str:
    """The reply to the last user message: a list of the asked size, or one line for a rewrite."""
    prompt = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    digest = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:4], "big")
    topic = _TO_WRITE.search(prompt)
    subject = (_SUBJECT.findall(prompt) or [topic.group(1) if topic else " ".join(prompt.split()[:6])])[-1][:80]
    match = _COUNT.search(prompt)
    if match is None or "new instruction only" in prompt:  # a rewrite: the instruction, made more detailed
        original = _INSTRUCTION.search(prompt)
        base = original.group(1).strip().rstrip("?.!") if original else f"Write about {subject}"
        return f"{base}, in about 300 words, for a general audience, with a clear structure."
    n = int(match.group(1))
    items = [f"What about the {_ANGLES[(digest + i) % len(_ANGLES)]} of {subject} (#{digest % 1000}-{i + 1})?"
             for i in range(n)]
    shape = shape or SHAPES[digest % len(SHAPES)]
    if shape == "numbered":
        return "\n".join(f"{i + 1}. {item}" for i, item in enumerate(items))
    if shape == "bulleted":
        return "\n".join(f"- {item}" for item in items)
    if shape == "json":
        return "```json\n" + json.dumps(items, indent=2) + "\n```"
    if shape == "bold":
        return "\n".join(f"**{i + 1}.** {item}" for i, item in enumerate(items))
    return "Sure! Here are some ideas:\n\n" + "\n".join(f"{i + 1}) {item}" for i, item in enumerate(items)) + \
        "\n\nI hope these help!"
