"""UltraChat's dialogue format as a transformers chat template.

The paper's format is ``<s>User: {u1}</s>\\nAssistant: {a1}</s>\\nUser: {u2}</s>...`` with loss on the
assistant text and its end-of-sequence token only. ``{% generation %}`` marks exactly those spans, so
``apply_chat_template(..., return_assistant_tokens_mask=True)`` yields the training mask. A system
message, which the paper's format lacks, is rendered as a plain first line.
"""

ULTRACHAT_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{{ message['content'] + '\\n' }}"
    "{% elif message['role'] == 'user' %}"
    "{{ 'User: ' + message['content'] + eos_token + '\\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ 'Assistant: ' }}"
    "{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}"
    "{{ '\\n' }}"
    "{% else %}"
    "{{ raise_exception('UltraChat format has roles system, user, assistant; got ' + message['role']) }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}"
)
