"""The contract every family's model honours, and what the families share about batches.

The train step (dlm/train/step.py) sees a model only through `corrupt` and `loss`; the
family's samplers (dlm/samplers/) through `denoise`, its one network call, and the attributes
its samplers document (`process`, `schedule`, `mask_id`, ...). Batches are dicts of arrays of
shape (batch, length): `tokens`, `segment_ids` (0 on padding), `positions`, optionally `given`
(a pair's source or a prompt: clean, time 0, never scored) and family-specific features.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax
import jax.numpy as jnp


class Model(Protocol):
  family: str  # the registry's name for it (dlm/registry.py)

  def corrupt(self, batch: dict, rng: jax.Array) -> dict:
    """The forward process on the whole batch (no network): the noisy batch, with everything
    `loss` needs. Drawing the noise for the whole batch first makes gradient accumulation
    exact (the micro-batches see the noise one big batch would)."""

  def loss(self, noisy: dict, *, rng: jax.Array | None = None,
           train: bool = True) -> tuple[jax.Array, dict]:
    """(objective summed over the batch, metrics as sums): `tokens` (the scored count) and
    `nelbo` (a likelihood bound, in nats) or `loss` (anything else), optionally `norm` (the
    objective's denominator if not `tokens`) and the family's terms."""

  def denoise(self, *inputs: Any, **kwargs: Any) -> Any:
    """The network, on the family's noisy state and per-token time (its docstring says
    which): what every sampler of the family calls."""


def given_mask(batch) -> jax.Array:
  """The batch's clean conditioning tokens (a pair's source; all False if unconditional)."""
  if "given" in batch:
    return batch["given"].astype(bool)
  return jnp.zeros(batch["tokens"].shape, bool)


def scored_mask(batch) -> jax.Array:
  """Tokens that are noised and scored: real tokens (not padding) that are not given."""
  return (batch["segment_ids"] > 0) & ~given_mask(batch)


def layout(shape, segment_ids=None, positions=None) -> tuple[jax.Array, jax.Array]:
  """`(segment_ids, positions)` of a (batch, length) canvas: the given ones, or one segment
  and positions 0 .. length - 1 (a sampler's canvas is one document per row)."""
  batch, length = shape[:2]
  if segment_ids is None:
    segment_ids = jnp.ones((batch, length), jnp.int32)
  if positions is None:
    positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
  return segment_ids, positions


def self_conditioned(first_pass, second_pass, zeros, use, given=None, clean=None):
  """Self-conditioning in training (Chen et al. 2023, "Analog Bits" §3.2): where `use`, the
  network's input x0_prev is a first estimate made without it (`first_pass(zeros)`, under
  stop-gradient), elsewhere zeros; returns `second_pass(x0_prev)`.

  `use` is a scalar (one draw per micro-batch: the first pass is skipped when False, as in
  CDCD/Plaid) or one bool per row (batch,) (Cosmos: the first pass always runs, rows pick).
  At `given` positions (batch, length) the estimate is `clean` (the clean embeddings), as
  the samplers feed it there after their first step; published self-conditioning feeds the raw
  estimate everywhere, which sampling never shows the network at given positions."""

  def estimate():
    x0_hat = first_pass(zeros)
    if given is not None:
      x0_hat = jnp.where(given[..., None], clean, x0_hat)
    return jax.lax.stop_gradient(x0_hat.astype(zeros.dtype))

  use = jnp.asarray(use)
  if use.ndim == 0:
    x0_prev = jax.lax.cond(use, estimate, lambda: zeros)
  else:
    x0_prev = jnp.where(use.reshape(use.shape + (1,) * (zeros.ndim - 1)), estimate(), zeros)
  return second_pass(x0_prev)
