"""Masked diffusion family (MDLM, Sahoo et al. 2024; MD4, Shi et al. 2024): the backbone as the
denoiser of `dlm.processes.masked.MaskedProcess`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from dlm.models.embedding_diffusion import given_mask
from dlm.models.transformer import Transformer, TransformerConfig
from dlm.processes.masked import MaskedProcess


class MaskedDiffusion(nnx.Module):
  """`loss` gives the NELBO; samplers use `log_probs` (zero-masking and carry-over)."""
  family = "masked"

  def __init__(self, net_cfg: TransformerConfig, process: MaskedProcess, rngs: nnx.Rngs,
               loss_norm: str = "token"):
    self.net = Transformer(net_cfg, rngs)
    self.process = process
    self.loss_norm = loss_norm  # 'token' | 'response' (LLaDA SFT: per row, then the mean)

  def logits(self, z, t, segment_ids=None, positions=None, *, rng=None):
    """Raw network logits at noisy tokens z with per-token time t (batch, length)."""
    t_in = t if self.net.cfg.conditioned else None
    return self.net(z, t_in, segment_ids, positions, rng=rng)

  def log_probs(self, z, t, segment_ids=None, positions=None):
    """log p(x_0 | z_t) over the vocabulary (never [MASK]; unmasked tokens carried over)."""
    return self.process.log_probs(self.logits(z, t, segment_ids, positions), z)

  def corrupt(self, batch, rng):
    """Forward process on a batch: one time per sequence, tokens masked with prob 1 - alpha.
    Padding and `given` tokens (a pair's source) are never noised nor scored; given tokens
    have time 0."""
    x = batch["tokens"]
    given = given_mask(batch)
    maskable = (batch["segment_ids"] > 0) & ~given
    rng_t, rng_mask = jax.random.split(rng)
    t = self.process.sample_time(rng_t, x.shape[0])
    t = jnp.where(given, 0.0, t[:, None])
    z = self.process.forward_sample(rng_mask, x, t, maskable)
    return {**batch, "z": z, "t": t, "maskable": maskable}

  def loss(self, noisy, *, rng=None, train: bool = True):
    """Sum over the batch of the per-token NELBO (nats), and metrics as sums.

    With `loss_norm="response"` (LLaDA's SFT) the objective is instead the sum over rows of
    each row's NELBO divided by its scored length (the response with its padding), and
    `metrics["norm"]` the number of such rows: the train step divides by it, so the update
    follows the mean over rows. `nelbo` and `tokens` stay the per-token bound's sums."""
    x, z, t, maskable = noisy["tokens"], noisy["z"], noisy["t"], noisy["maskable"]
    logits = self.logits(z, t, noisy["segment_ids"], noisy["positions"],
                         rng=rng if train else None)
    nelbo = self.process.nelbo(self.process.log_prob_of(logits, x), z, t, maskable)
    total = nelbo.sum()
    metrics = {"nelbo": total, "tokens": maskable.sum(),
               "masked": ((z == self.process.mask_id) & maskable).sum()}
    if self.loss_norm == "response":
      lengths = maskable.sum(axis=-1)
      objective = jnp.sum(nelbo.sum(axis=-1) / jnp.maximum(lengths, 1))
      metrics["norm"] = (lengths > 0).sum()
      return objective, metrics
    return total, metrics
