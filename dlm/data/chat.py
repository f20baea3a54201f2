"""Chat templates: a model's Jinja template (HF `tokenizer_config.json`'s `chat_template`)
rendered as `transformers`' `apply_chat_template` renders it (jinja2's sandbox with
`trim_blocks` and `lstrip_blocks`, the loop-control extension, `raise_exception`, `tojson` and
`strftime_now`, and the special tokens by their role names: `bos_token`, `eos_token`, ...).
"""

from __future__ import annotations

import datetime
import json
from typing import Mapping, Sequence

import jinja2
from jinja2 import sandbox

from dlm.errors import DlmError


def _raise(message: str):
  raise jinja2.exceptions.TemplateError(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
  return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                    sort_keys=sort_keys)


def _environment() -> sandbox.ImmutableSandboxedEnvironment:
  env = sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                              extensions=["jinja2.ext.loopcontrols"])
  env.filters["tojson"] = _tojson
  env.globals["raise_exception"] = _raise
  env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
  return env


def messages_of(prompt: str, system: str | None = None) -> list[dict]:
  """A one-turn conversation: an optional system message, then the user's prompt."""
  return ([{"role": "system", "content": system}] if system else []) + [
      {"role": "user", "content": prompt}]


def render(template: str, messages: Sequence[Mapping[str, str]],
           special_tokens: Mapping[str, str], add_generation_prompt: bool = True) -> str:
  """The template's text for `messages`; `special_tokens` maps `bos_token`, `eos_token`, ...
  to their spellings. A template that fails (or rejects the messages) is a DlmError."""
  if not template:
    raise DlmError("this model has no chat template (data.tokenizer.chat_template is empty)")
  try:
    compiled = _environment().from_string(template)
    return compiled.render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                           **special_tokens)
  except jinja2.exceptions.TemplateError as e:
    raise DlmError(f"the chat template failed: {e}") from None
