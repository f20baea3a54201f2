"""The built-in model families, registered (dlm/registry.py) when `dlm` is imported; `build`
makes the model of a config's `model.family`.

A new family is its process (dlm/processes/), its model module (here: the model, its config
dataclass and its `Family` record) and its samplers (dlm/samplers/); registering its record is
the one line it adds to an existing file (below, or in the user's own module).
"""

from __future__ import annotations

from flax import nnx

from dlm import registry
from dlm.models import (any_order, autoregressive, ccdd, continuous, cosmos, joint_head,
                        masked, neodiff)

for _family in (masked.FAMILY, continuous.FAMILY, neodiff.FAMILY, autoregressive.FAMILY,
                ccdd.FAMILY, cosmos.AUTOENCODER, cosmos.DIFFUSION, any_order.FAMILY,
                joint_head.FAMILY):
  registry.register(_family)


def build(config, tokenizer, rngs: nnx.Rngs) -> nnx.Module:
  """The model of `config.model.family` for this tokenizer's vocabulary."""
  return registry.get(config.model.family).build(config, tokenizer, rngs)
