"""Distributions over the vocabulary: what masked processes, families and samplers share."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def zero_masking(logits: jax.Array, mask_id: int) -> jax.Array:
  """float32 logits in which [MASK] has no mass: the model never proposes [MASK] (MDLM's
  zero-masking parameterisation, §3.3)."""
  return logits.astype(jnp.float32).at[..., mask_id].set(-jnp.inf)


def entropy(logits: jax.Array) -> jax.Array:
  """Entropy (nats) of softmax(logits) over the last axis; -inf logits have no mass."""
  logp = jax.nn.log_softmax(logits, axis=-1)
  p = jnp.exp(logp)
  return -jnp.sum(jnp.where(p > 0, p * logp, 0.0), axis=-1)
