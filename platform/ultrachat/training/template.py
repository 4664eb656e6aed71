"""Which chat template a training run tokenizes with, decided before any worker starts.

Assistant-only loss needs the template to mark assistant content with ``{% generation %}``. ``auto``
takes the model's own template when it does, else the UltraChat format (the paper's, for base models
without one); ``model`` insists on the model's and says what is missing; ``ultrachat`` always uses
the UltraChat format, ``zephyr`` the Zephyr recipe's. The chosen template is saved with the export, so serving renders the same.
"""

from __future__ import annotations

from ultrachat.errors import InputError
from ultrachat.models.chat_template import ULTRACHAT_CHAT_TEMPLATE, ZEPHYR_CHAT_TEMPLATE


def has_generation_markers(template: str | None) -> bool:
    return bool(template) and "{% generation %}" in template.replace("{%- generation %}", "{% generation %}")


def resolve_chat_template(tokenizer, mode: str, model_ref: str) -> tuple[str, str]:
    """(template, where it came from) for ``train.chat_template: mode``."""
    own = getattr(tokenizer, "chat_template", None)
    if mode == "ultrachat":
        return ULTRACHAT_CHAT_TEMPLATE, "ultrachat"
    if mode == "zephyr":
        return ZEPHYR_CHAT_TEMPLATE, "zephyr"
    if has_generation_markers(own):
        return own, "model"
    if mode == "model":
        problem = "has no chat template" if not own else "has a chat template without {% generation %} markers"
        raise InputError(f"model: {model_ref} {problem}, so assistant tokens cannot be told apart for the loss. "
                         f"Fix: set chat_template: ultrachat (the UltraChat format) or auto")
    return ULTRACHAT_CHAT_TEMPLATE, "ultrachat (the model's own template has no {% generation %} markers)" \
        if own else "ultrachat (the model has no chat template)"
