"""The model families, one record each: a new family is new files and one `register` call.

A `Family` says what the rest of the framework needs to know about a family and nothing more:
its name, the config sections it reads (dataclasses: the one source of their keys, defaults
and checks; `dlm.config.base_config` generates the sections from them), how to build its model
from a config and a tokenizer, and optional hooks. The model itself honours the contract of
`dlm.models.family.Model` (`corrupt`, `loss`, `denoise`); its samplers register themselves
with `dlm.samplers` under the family's name. `dlm.models` registers the built-in families; a
user's module or a test may register more before building a config.

This module sits at the bottom of the layers (it imports nothing of dlm but `errors`): the
config, the models, the samplers and the training loop all look families up here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from dlm.errors import DlmError


@dataclasses.dataclass(frozen=True)
class Family:
  """Everything family-specific that the generic code calls.

  name        `model.family` in a config; also the key of the family's samplers.
  build       (config, tokenizer, rngs) -> the model (an `nnx.Module` with `family = name`).
  sections    config section name -> dataclass; `dlm.config` generates the section from the
              dataclass's defaults and validates a config by constructing it (its
              `__post_init__` raises `DlmError`). Families may share a section (one dataclass).
  check       (config) -> None: checks across sections (raises DlmError), after the sections'.
  resolve     (config, read_config) -> None: settings adopted from other workdirs before a
              run builds its model (`read_config(workdir)` returns a workdir's stored config).
  pretrained  (model, config, tokenizer, sources) -> a partial pure dict of parameter values
              filled after initialisation (a frozen encoder's weights, statistics fitted on
              training rows); `sources` gives `rows(n, what)` and `restore(workdir)` (see
              `dlm.train.pretrained.Sources`).
  frozen_prefixes  parameter paths under these are never trained (a frozen base, an
              autoencoder).
  generates_text   False for a family without samplers (a Cosmos autoencoder).
  """

  name: str
  build: Callable[..., Any]
  sections: Mapping[str, type] = dataclasses.field(default_factory=dict)
  check: Callable[[Any], None] | None = None
  resolve: Callable[[Any, Callable[[str], Any]], None] | None = None
  pretrained: Callable[..., dict] | None = None
  frozen_prefixes: tuple[str, ...] = ()
  generates_text: bool = True


_FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
  """Adds a family (its sections must not clash with another family's); returns it."""
  known = sections()
  for name, cls in family.sections.items():
    if known.get(name, cls) is not cls:
      raise ValueError(f"config section {name!r} of family {family.name!r} is already "
                       f"{known[name].__name__}, not {cls.__name__}")
  if _FAMILIES.get(family.name, family) is not family:
    raise ValueError(f"a family named {family.name!r} is already registered")
  _FAMILIES[family.name] = family
  return family


def get(name: str) -> Family:
  if name not in _FAMILIES:
    raise DlmError(f"unknown model.family {name!r}; expected one of {names()}")
  return _FAMILIES[name]


def names() -> tuple[str, ...]:
  return tuple(_FAMILIES)


def sections() -> dict[str, type]:
  """Every registered family's config sections, in registration order."""
  out: dict[str, type] = {}
  for family in _FAMILIES.values():
    for name, cls in family.sections.items():
      out.setdefault(name, cls)
  return out
