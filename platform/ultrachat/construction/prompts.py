"""Every prompt of opening-line construction, one per LLM stage, in one reviewable place.

UltraChat's authors published the shape of the construction (meta-topics -> subtopics -> questions ->
further questions; entities -> meta-questions -> specific / extended questions; material types ->
instructions -> refined instructions; C4 pieces -> instructions about each piece) but not their
prompts. These are ours. A config may replace any of them (``construction.prompts.<stage>``); a
replacement must keep the placeholders its stage fills in, which `check_template` verifies up front.

Every list prompt asks for a numbered list and nothing else; `list_parser.parse_list` copes when a
model adds prose, bullets or JSON anyway.
"""

from __future__ import annotations

import string

# stage -> default template. {n} is the number of items asked for in this call; {part} / {parts} say
# which of several calls for the same parent this is (long lists are asked for in parts).
DEFAULT_PROMPTS: dict[str, str] = {
    "subtopics": (
        'List {n} diverse subtopics of the topic "{meta_topic}" that people often ask about. '
        "Write them as a numbered list, one per line, with no other text."
    ),
    "topic_questions": (
        'Write {n} diverse questions that a curious person might ask an AI assistant about "{subtopic}" '
        '(a subtopic of "{meta_topic}"). Write them as a numbered list, one per line, with no other text.'
    ),
    "further_questions": (
        'Here is a question: "{question}"\n'
        "Write {n} new questions that follow from it: more specific, related or deeper questions a person "
        "might ask next. Write them as a numbered list, one per line, with no other text."
    ),
    "meta_questions": (
        'Write {n} general questions that people ask about "{entity}"{description}. '
        "Write them as a numbered list, one per line, with no other text."
    ),
    "specific_questions": (
        'Here is a question about "{entity}": "{question}"\n'
        'Write {n} more specific questions about "{entity}" that go deeper than this one. '
        "Write them as a numbered list, one per line, with no other text."
    ),
    "extended_questions": (
        'Here is a question about "{entity}": "{question}"\n'
        'Write {n} questions of the same form about other people, places, things or ideas similar to "{entity}". '
        "Write them as a numbered list, one per line, with no other text."
    ),
    "instructions": (
        "Write {n} diverse instructions that ask an AI assistant to write {material_type_lower}. "
        "Each instruction names its subject and says what is wanted. "
        "Write them as a numbered list, one per line, with no other text."
    ),
    "refined_instructions": (
        "Rewrite the following instruction into a more detailed one: add specifics about the content, "
        "style, length or audience, and keep the same goal.\n"
        "Instruction: {instruction}\n"
        "Reply with the new instruction only."
    ),
    # The task before and after the text: a model that reads only the text would start working on it
    # (measured: SmolLM2-135M answered the text in 3 of 3 calls with the task before it only).
    "material_instructions": (
        "Write {n} different instructions or questions a user might give an AI assistant about the text "
        "below (for example: summarize it, rewrite it in another style, continue it, explain a point, or "
        "ask a question about it). Refer to it as \"the text\".\n\n"
        "The text ({material_type}):\n\"\"\"\n{text}\n\"\"\"\n\n"
        "Now write the {n} instructions about the text as a numbered list, one per line, with no other text."
    ),
}

# The placeholders each stage fills in; a custom template must use the required ones and no others.
PLACEHOLDERS: dict[str, tuple[set[str], set[str]]] = {  # stage -> (required, allowed)
    "subtopics": ({"meta_topic"}, {"n", "part", "parts"}),
    "topic_questions": ({"subtopic"}, {"meta_topic", "n", "part", "parts"}),
    "further_questions": ({"question"}, {"subtopic", "meta_topic", "n", "part", "parts"}),
    "meta_questions": ({"entity"}, {"description", "n", "part", "parts"}),
    "specific_questions": ({"question"}, {"entity", "n", "part", "parts"}),
    "extended_questions": ({"question"}, {"entity", "n", "part", "parts"}),
    "instructions": (set(), {"material_type", "material_type_lower", "n", "part", "parts"}),
    "refined_instructions": ({"instruction"}, {"material_type", "material_type_lower"}),
    "material_instructions": ({"text"}, {"material_type", "material_type_lower", "url", "n", "part", "parts"}),
}
# A stage whose template never says which material type could not tell the calls apart.
_ONE_OF: dict[str, set[str]] = {"instructions": {"material_type", "material_type_lower"}}
# Stages asking for one item (the reply is the item) rather than a list.
SINGLE_ITEM_STAGES = frozenset({"refined_instructions"})


def check_template(stage: str, template: str) -> str | None:
    """What is wrong with `template` as the prompt of `stage`, or None if it is usable."""
    if stage not in DEFAULT_PROMPTS:
        return f"unknown stage {stage!r}; stages are {', '.join(DEFAULT_PROMPTS)}"
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        return f"not a valid format string ({exc}); double literal braces as {{{{ and }}}}"
    required, allowed = PLACEHOLDERS[stage]
    if any(not f or not f.isidentifier() for f in fields):
        return "placeholders must be names like {question}; positional {} or {0} are not filled in"
    unknown = fields - required - allowed
    if unknown:
        return (f"unknown placeholder(s) {', '.join('{' + u + '}' for u in sorted(unknown))}; this stage fills in "
                f"{', '.join('{' + a + '}' for a in sorted(required | allowed))}")
    missing = required - fields
    if missing:
        return f"lacks {', '.join('{' + m + '}' for m in sorted(missing))}, which this stage needs"
    one_of = _ONE_OF.get(stage)
    if one_of and not fields & one_of:
        return f"lacks one of {', '.join('{' + o + '}' for o in sorted(one_of))}"
    return None


def render(template: str, **values: object) -> str:
    return template.format(**values)
