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

# Zephyr's format (alignment-handbook recipes/zephyr-7b-beta): "<|user|>\n{u}</s>\n<|assistant|>\n{a}</s>\n",
# the template of ultrachat_200k / ultrafeedback_binarized fine-tunes. Loss on the assistant text and
# its end-of-sequence token, as in the UltraChat format.
ZEPHYR_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{{ '<|system|>\n' + message['content'] + eos_token + '\n' }}"
    "{% elif message['role'] == 'user' %}"
    "{{ '<|user|>\n' + message['content'] + eos_token + '\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\n' }}"
    "{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}"
    "{{ '\n' }}"
    "{% else %}"
    "{{ raise_exception('Zephyr format has roles system, user, assistant; got ' + message['role']) }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
