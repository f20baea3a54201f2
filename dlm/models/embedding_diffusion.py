"""What the continuous families (continuous, NeoDiff) share: learned token embeddings and the
network reading noisy embeddings with self-conditioning (`family.self_conditioned`).

Token embeddings e(w) live in a small space of `embed_dim`; the backbone reads
`in_proj([z_t ; x0_prev])` (self-conditioning, Chen et al. 2023: x0_prev is the previous
estimate of x_0, zero when absent) and a per-token time through adaLN.
"""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from dlm.models.layers import param
from dlm.models.transformer import Transformer, TransformerConfig


class TokenEmbedding(nnx.Module):
  """e(w): a learned (vocab, dim) table; with `normalize`, rows are L2-normalised and scaled to
  norm sqrt(dim) (CDCD, Dieleman et al. 2022 §3.1: unit variance per dimension, no collapse);
  without, rows start with unit variance (NeoDiff / Difformer: sqrt(d) * Emb, Emb ~ N(0, 1/d))."""

  def __init__(self, vocab: int, dim: int, normalize: bool, rngs: nnx.Rngs):
    self.normalize = normalize
    self.dim = dim
    self.table = param(rngs, nnx.initializers.normal(1.0), (vocab, dim), ("vocab", None))

  def all(self) -> jax.Array:
    e = self.table[...]
    if self.normalize:
      e = e * jax.lax.rsqrt(jnp.sum(e * e, axis=-1, keepdims=True) + 1e-12) * self.dim**0.5
    return e

  def __call__(self, ids: jax.Array) -> jax.Array:
    return jnp.take(self.all(), ids, axis=0)


class EmbeddingDenoiser(nnx.Module):
  """(z_t, x0_prev, per-token t) -> the backbone's output: logits over the vocabulary, or with
  `out_features` a vector per token."""

  def __init__(self, net_cfg: TransformerConfig, embed_dim: int, rngs: nnx.Rngs,
               out_features: int = 0):
    cfg = dataclasses.replace(net_cfg, token_inputs=False, time_conditioning="adaln_zero",
                              tie_embeddings=False, out_features=out_features)
    self.embed_dim = embed_dim
    self.in_proj = param(rngs, nnx.initializers.normal((2 * embed_dim)**-0.5),
                         (2, embed_dim, cfg.width), (None, None, "embed"))
    self.net = Transformer(cfg, rngs)

  def __call__(self, z, x0_prev, t, segment_ids=None, positions=None, *, rng=None):
    chex.assert_equal_shape((z, x0_prev))
    chex.assert_shape(t, z.shape[:2])
    zc = jnp.stack([z, x0_prev], axis=2).astype(jnp.dtype(self.net.cfg.dtype))
    h = jnp.einsum("blsd,sdw->blw", zc, self.in_proj[...].astype(zc.dtype))
    return self.net(h, t, segment_ids, positions, rng=rng)
