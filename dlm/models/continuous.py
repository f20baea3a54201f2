"""Continuous diffusion over token embeddings (CDCD, Dieleman et al. 2022; Plaid, Gulrajani and
Hashimoto 2023; Diffusion-LM, Li et al. 2022).

Tokens become learned embeddings e(w) (`TokenEmbedding`); the Gaussian VP process of
`dlm.processes.gaussian` noises them, each token at its own time (a pair's source, `given`, at
t = 0 stays clean). The network predicts x_0 as logits over the vocabulary and is trained with
cross-entropy (CDCD's score interpolation: the x_0 estimate is E_p[e(w)] = softmax(logits) @ E,
CDCD eq. 4), plus an optional embedding MSE `||x0_hat - e(x)||^2` (Diffusion-LM's L_simple on
x_0). Self-conditioning feeds the previous x_0 estimate back (probability 0.5 in training); at
given positions that input is the clean embedding e(x) in training as in sampling (the samplers
hold given positions at e(x); a departure: self-conditioning as published feeds the network's
own estimate everywhere).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from dlm.models.embedding_diffusion import (EmbeddingDenoiser, TokenEmbedding, given_mask,
                                            self_conditioned, target_mask)
from dlm.models.transformer import TransformerConfig
from dlm.processes import gaussian


@dataclasses.dataclass(frozen=True)
class ContinuousConfig:
  embed_dim: int = 64
  schedule: str = "cosine"  # dlm.processes.gaussian schedules
  tan_d: float = 5.0  # tan_d schedule only
  noise_scale: float = 1.0  # training noise std multiplier (Difformer's noise factor)
  self_condition: float = 0.5  # probability in training; 0 = off
  mse_weight: float = 0.0  # weight of the embedding MSE beside the cross-entropy
  normalize_embeddings: bool = True
  antithetic: bool = True


class ContinuousDiffusion(nnx.Module):
  family = "continuous"

  def __init__(self, net_cfg: TransformerConfig, cfg: ContinuousConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.schedule = gaussian.GaussianSchedule(cfg.schedule, d=cfg.tan_d)
    self.embedding = TokenEmbedding(net_cfg.vocab_size, cfg.embed_dim,
                                    cfg.normalize_embeddings, rngs)
    self.denoiser = EmbeddingDenoiser(net_cfg, cfg.embed_dim, rngs)

  def logits(self, z, t, x0_prev, segment_ids=None, positions=None, *, rng=None):
    """Logits of x_0 at noisy embeddings z with per-token time t (batch, length)."""
    return self.denoiser(z, x0_prev, t, segment_ids, positions, rng=rng)

  def x0_estimate(self, logits) -> jax.Array:
    """E[e(x_0) | z_t] under the predicted distribution (CDCD score interpolation)."""
    return jax.nn.softmax(logits, axis=-1) @ self.embedding.all()

  def corrupt(self, batch, rng):
    """Draws each sequence's time (stratified over the batch when antithetic) and the noise;
    the noisy embeddings are made in `loss`, where gradients reach the embedding table."""
    x = batch["tokens"]
    target = target_mask(batch)
    rng_t, rng_eps = jax.random.split(rng)
    b = x.shape[0]
    u = jax.random.uniform(rng_t, (b,))
    if self.cfg.antithetic:
      u = jnp.mod(u[0] + jnp.arange(b) / b, 1.0)
    t = jnp.where(target, u[:, None], 0.0)
    eps = jax.random.normal(rng_eps, x.shape + (self.cfg.embed_dim,))
    return {**batch, "t": t, "eps": eps, "target": target}

  def loss(self, noisy, *, rng=None, train: bool = True):
    x, t, target = noisy["tokens"], noisy["t"], noisy["target"]
    seg, pos = noisy["segment_ids"], noisy["positions"]
    e = self.embedding(x)
    z = gaussian.forward_sample(None, e, t, self.schedule, self.cfg.noise_scale,
                                noise=noisy["eps"])
    rng_sc, rng_net = (None, None) if rng is None else jax.random.split(rng)

    def first(x0_prev):
      return self.x0_estimate(self.logits(z, t, x0_prev, seg, pos))

    def second(x0_prev):
      return self.logits(z, t, x0_prev, seg, pos, rng=rng_net if train else None)

    logits = self_conditioned(first, second, e.shape, self.cfg.self_condition, rng_sc, train,
                              given_mask(noisy), e)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, x)
    mse = jnp.mean(jnp.square(self.x0_estimate(logits) - e), axis=-1)
    ce = jnp.where(target, ce, 0.0).sum()
    mse = jnp.where(target, mse, 0.0).sum()
    total = ce + self.cfg.mse_weight * mse
    return total, {"loss": total, "ce": ce, "mse": mse, "tokens": target.sum()}
