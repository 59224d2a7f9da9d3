"""The chat template a finetune trains with, and the examples it writes: one per assistant turn.

Training and serving share one template, and the finetuned model folder carries it
(tokenizer_config.json `chat_template`, which `serve`, `generate` and HF transformers read). It is:
`data.template` (a Jinja file) when the recipe names one, else the base model's own, else LLaMA-2's
chat format below: `<s>[INST] user [/INST] reply</s>`, an optional system prompt in `<<SYS>>` inside
the first turn. We chose LLaMA-2's format over the plain "User:/Assistant:" transcript because it is
the LLaMA family's own, HF transformers renders it from the folder, and the reply ends with EOS, so a
served model stops by itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from llamafoundry.errors import UserError
from llamafoundry.finetune.data import Conversation
from llamafoundry.inference.chat import ChatTemplate, load_chat_template, render_reply
from llamafoundry.tokenizer import Tokenizer

# Meta's Llama-2-chat format (llama/generation.py's chat_completion), as HF writes it in Jinja; the reply
# ends with EOS directly (HF's copy puts a space before it, a token Meta's code never produces).
LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}"
    "{% set system = messages[0]['content'].strip() %}{% set turns = messages[1:] %}"
    "{% else %}{% set system = '' %}{% set turns = messages %}{% endif %}"
    "{% for message in turns %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('roles must alternate user, assistant, user, ... after an optional system message') }}"
    "{% endif %}"
    "{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' }}"
    "{% if loop.first and system %}{{ '<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' }}{% endif %}"
    "{{ message['content'].strip() + ' [/INST]' }}"
    "{% else %}{{ ' ' + message['content'].strip() + eos_token }}{% endif %}"
    "{% endfor %}"
)
_PROBE = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hello!"}]


@dataclass(frozen=True)
class Example:
    """A training example's tokens: the prompt (no loss), then the reply (the loss)."""

    tokens: list[int]
    prompt_len: int


def choose_template(base: str | os.PathLike, template_file: str, tokenizer: Tokenizer) -> ChatTemplate:
    """The template to train with (see the module's docstring), tried on a short conversation now: one
    that fails to render is a UserError before anything is written."""
    if template_file:
        path = Path(template_file)
        try:
            template = ChatTemplate(jinja=path.read_text(encoding="utf-8"), stop=())
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(
                f"data.template {path} cannot be read ({exc}); give a Jinja template file"
            ) from None
    else:
        own = load_chat_template(base) if Path(base).is_dir() else ChatTemplate()
        template = own if own.jinja is not None else ChatTemplate(jinja=LLAMA2_TEMPLATE, stop=())
    try:
        render_reply(_PROBE[:1], _PROBE[1]["content"], template, tokenizer)
    except UserError as exc:
        raise UserError(f"chat template {template_file or base}: {exc}") from None
    return template


def examples_of(
    conversations: list[Conversation], template: ChatTemplate, tokenizer: Tokenizer
) -> list[Example]:
    """One example per assistant turn after the first message: its history rendered as the prompt that
    serving gives (`render_chat`), the turn as the reply. A conversation the template refuses is a
    UserError naming its file and record."""
    examples = []
    for conversation in conversations:
        messages = conversation.messages
        try:
            for i in range(1, len(messages)):
                if messages[i]["role"] == "assistant":
                    prompt, reply = render_reply(messages[:i], messages[i]["content"], template, tokenizer)
                    examples.append(Example(prompt + reply, len(prompt)))
        except UserError as exc:
            raise UserError(f"{conversation.source}: {exc}") from None
    return examples
