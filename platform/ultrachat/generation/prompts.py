"""Every prompt of the dialogue simulation, in one reviewable place. Written for this project.

UltraChat's authors never released their prompts; what the paper states, and what this module does:
- the assistant answers from the conversation so far;
- the user simulator sees the conversation *from the user's side* (its own past turns as the
  assistant's, the assistant's as the user's), and AFTER that history an instruction tells it that it
  is now the user and should continue briefly and naturally. That closing instruction is the paper's
  fix for role confounding (the simulator drifting into answering like an assistant);
- personas are sampled per dialogue (from very professional to casual users);
- sector II reminds the user of its goal (a piece of writing, then revisions and related material);
  sector III lets the user ask about the material in its opening line.
"""

from __future__ import annotations

import random

DEFAULT_ASSISTANT_SYSTEM_PROMPT = (
    "You are a helpful, knowledgeable assistant. Answer accurately and in depth, stay on the topic "
    "the user raised, and follow the user's instructions about format and length."
)

PERSONAS = (
    "a busy professional who writes short, precise messages and expects expert-level detail",
    "a curious student who asks follow-up questions to understand the reasoning",
    "a casual user who writes informally, sometimes in lowercase, and gets to the point",
    "a skeptical reader who questions claims and asks for evidence or examples",
    "a hobbyist who is enthusiastic about the topic and shares bits of personal context",
    "a practical person who wants concrete steps, numbers and recommendations",
    "a non-native English speaker who writes simple, clear sentences",
    "a teacher preparing material for a class, interested in clear explanations",
    "a writer who cares about tone, style and wording",
    "a manager who wants summaries, trade-offs and decisions",
)

_USER_SIMULATOR_SYSTEM = (
    "You are role-playing a human user who is chatting with an AI assistant. You are {persona}. "
    "Stay in character: you are the one asking, never the one helping."
)

_SECTOR_GOALS = {
    "I": "You started this conversation to learn about something in the world. Dig deeper into what "
         "interests you: ask for details, examples, causes, comparisons or practical implications.",
    "II": "You started this conversation to get a piece of writing made. Keep pushing toward the "
          "piece you want: ask for more detail, revisions of tone, length or structure, or a related "
          "piece of writing.",
    "III": "You started this conversation about a text you provided. You may ask about the material "
           "itself, ask for a different kind of help with it, or follow up on the assistant's answer.",
}

# Appended AFTER the rendered history: the paper's fix for role confounding.
_CONTINUE_AS_USER = (
    "Now you are the user again. {goal} Write your next message to the assistant: one to three "
    "sentences, the way a real person would type it. Do not answer your own question, do not thank "
    "the assistant or say goodbye, do not offer help, and do not say you are an AI. Reply with the "
    "message only."
)


def pick_persona(rng: random.Random, personas: list[str] | tuple[str, ...] = ()) -> str:
    return rng.choice(list(personas) or list(PERSONAS))


def assistant_messages(history: list[dict[str, str]], system_prompt: str | None) -> list[dict[str, str]]:
    """What the assistant sees: its system prompt and the conversation as it happened."""
    system = DEFAULT_ASSISTANT_SYSTEM_PROMPT if system_prompt is None else system_prompt
    return ([{"role": "system", "content": system}] if system else []) + list(history)


def user_simulator_messages(history: list[dict[str, str]], sector: str, persona: str,
                            system_prompt: str | None) -> list[dict[str, str]]:
    """What the user simulator sees: the history with roles swapped, then the continue-as-user turn.

    The simulator is itself a chat model answering as "assistant", so the real user's turns become
    its own (assistant) turns and the real assistant's turns become the other side's (user) turns.
    The instruction goes last, after the history, where the model attends to it most.
    """
    system = (system_prompt or _USER_SIMULATOR_SYSTEM).format(persona=persona)
    swapped = [{"role": "assistant" if m["role"] == "user" else "user", "content": m["content"]}
               for m in history]
    instruction = _CONTINUE_AS_USER.format(goal=_SECTOR_GOALS.get(sector, _SECTOR_GOALS["I"]))
    # The history ends with the real assistant's turn (now "user"); the instruction joins that turn
    # so roles keep alternating for chat templates that insist on it.
    last = swapped[-1]
    swapped[-1] = {"role": last["role"], "content": f"{last['content']}\n\n[{instruction}]"}
    return [{"role": "system", "content": system}] + swapped
