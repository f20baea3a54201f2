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

Not implemented from the papers (so this is a CDCD/Plaid-style baseline, not either): CDCD's
time warping (an adaptive time distribution fitted to the loss, §3.3) and its VE noise range
(sigma from 1 to 300 with the embedding's scale); Plaid's likelihood training (its VLB with
learned noise schedule and embedding losses, and its likelihood evaluation). The process is
the VP schedule of `dlm.processes.gaussian`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from dlm import config as config_lib
from dlm import registry
from dlm.errors import DlmError
from dlm.models import masked, transformer
from dlm.models.embedding_diffusion import EmbeddingDenoiser, TokenEmbedding
from dlm.models.family import given_mask, scored_mask, self_conditioned
from dlm.models.transformer import TransformerConfig
from dlm.processes import gaussian
from dlm.processes import time as time_lib


@dataclasses.dataclass(frozen=True)
class ContinuousConfig:
  """Config section `continuous` (the time draws' `antithetic` is `diffusion.antithetic`)."""

  embed_dim: int = 64  # token embedding (diffusion space) width
  schedule: str = "cosine"  # VP schedule: 'cosine' | 'sqrt' (Diffusion-LM) | 'tan_d' (Cosmos)
  tan_d: float = 5.0  # tan_d only: the shift d
  noise_scale: float = 1.0  # training noise std multiplier (Difformer's noise factor)
  self_condition: float = 0.5  # self-conditioning probability in training (0 = off)
  mse_weight: float = 0.0  # embedding MSE beside the x_0 cross-entropy
  normalize_embeddings: bool = True  # CDCD: L2-normalised rows scaled to sqrt(embed_dim)

  def __post_init__(self):
    if self.schedule not in gaussian.NAMES:
      raise DlmError(f"unknown continuous.schedule {self.schedule!r}; expected one of "
                     f"{gaussian.NAMES}")
    if not isinstance(self.embed_dim, int) or self.embed_dim <= 0:
      raise DlmError(f"continuous.embed_dim must be a positive integer, got {self.embed_dim!r}")
    if not 0.0 <= self.self_condition <= 1.0:
      raise DlmError(f"continuous.self_condition must be in [0, 1], got {self.self_condition}")


class ContinuousDiffusion(nnx.Module):
  family = "continuous"

  def __init__(self, net_cfg: TransformerConfig, options: ContinuousConfig, rngs: nnx.Rngs,
               antithetic: bool = True):
    self.options = options
    self.antithetic = antithetic
    self.schedule = gaussian.GaussianSchedule(options.schedule, d=options.tan_d)
    self.embedding = TokenEmbedding(net_cfg.vocab_size, options.embed_dim,
                                    options.normalize_embeddings, rngs)
    self.denoiser = EmbeddingDenoiser(net_cfg, options.embed_dim, rngs)

  def denoise(self, z, t, x0_prev, segment_ids=None, positions=None, *, rng=None):
    """Logits of x_0 at noisy embeddings z with per-token time t (batch, length), given the
    previous x_0 estimate (zeros at the first step)."""
    return self.denoiser(z, x0_prev, t, segment_ids, positions, rng=rng)

  def x0_estimate(self, logits) -> jax.Array:
    """E[e(x_0) | z_t] under the predicted distribution (CDCD score interpolation)."""
    return jax.nn.softmax(logits, axis=-1) @ self.embedding.all()

  def corrupt(self, batch, rng):
    """Draws each sequence's time (stratified over the batch when antithetic) and the noise;
    the noisy embeddings are made in `loss`, where gradients reach the embedding table."""
    x = batch["tokens"]
    scored = scored_mask(batch)
    rng_t, rng_eps = jax.random.split(rng)
    u = time_lib.sample_times(rng_t, x.shape[0], self.antithetic)
    t = jnp.where(scored, u[:, None], 0.0)
    eps = jax.random.normal(rng_eps, x.shape + (self.options.embed_dim,))
    return {**batch, "t": t, "eps": eps, "scored": scored}

  def loss(self, noisy, *, rng=None, train: bool = True):
    x, t, scored = noisy["tokens"], noisy["t"], noisy["scored"]
    seg, pos = noisy["segment_ids"], noisy["positions"]
    e = self.embedding(x)
    z = gaussian.forward_sample(None, e, t, self.schedule, self.options.noise_scale,
                                noise=noisy["eps"])
    rng_sc, rng_net = (None, None) if rng is None else jax.random.split(rng)

    def first(x0_prev):
      return self.x0_estimate(self.denoise(z, t, x0_prev, seg, pos))

    def second(x0_prev):
      return self.denoise(z, t, x0_prev, seg, pos, rng=rng_net if train else None)

    zeros = jnp.zeros(e.shape, jnp.float32)
    if train and self.options.self_condition > 0:
      use = jax.random.bernoulli(rng_sc, self.options.self_condition)
      logits = self_conditioned(first, second, zeros, use, given_mask(noisy), e)
    else:
      logits = second(zeros)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, x)
    mse = gaussian.x0_mse(self.x0_estimate(logits), e, mean_over_dim=True)
    ce = jnp.where(scored, ce, 0.0).sum()
    mse = jnp.where(scored, mse, 0.0).sum()
    total = ce + self.options.mse_weight * mse
    return total, {"loss": total, "ce": ce, "mse": mse, "tokens": scored.sum()}


def build(config, tokenizer, rngs: nnx.Rngs) -> ContinuousDiffusion:
  return ContinuousDiffusion(transformer.for_tokenizer(config, tokenizer),
                             config_lib.options(ContinuousConfig, config.continuous), rngs,
                             antithetic=masked.config_options(config).antithetic)


FAMILY = registry.Family("continuous", build, sections={
    "continuous": ContinuousConfig, "diffusion": masked.MaskedConfig})
