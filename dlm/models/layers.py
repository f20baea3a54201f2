"""Building blocks of the shared backbone, each parameter tagged with logical axis names.

Logical names (mapped to mesh axes by the ordered rules in `mesh.rules`):
  parameters:  vocab, embed, heads, kv, mlp, cond, layers (stacked, scanned layers)
  activations: batch, length, embed, heads, kv, mlp, vocab
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from dlm import sharding


class Frozen(nnx.Variable):
  """A pretrained weight that is never trained (not an `nnx.Param`; see dlm/train/pretrained.py)."""


def param(rngs: nnx.Rngs, init, shape: Sequence[int], names: Sequence[str | None],
          dtype=jnp.float32) -> nnx.Param:
  """A parameter (float32 unless `dtype`) carrying its logical axis names (sharded later by our
  rules)."""
  assert len(shape) == len(names), (shape, names)
  return nnx.Param(init(rngs.params(), tuple(shape), dtype),
                   out_sharding=tuple(names), eager_sharding=False)


def constrain(x: jax.Array, names: Sequence[str | None], rules) -> jax.Array:
  """Activation sharding constraint by logical names; a no-op outside a mesh context."""
  if jax.sharding.get_abstract_mesh().empty:
    return x
  return jax.lax.with_sharding_constraint(x, sharding.logical_spec(names, rules))


class RMSNorm(nnx.Module):
  """RMSNorm (Zhang and Sennrich 2019), computed in float32."""

  def __init__(self, width: int, rngs: nnx.Rngs, eps: float = 1e-6, dtype=jnp.float32):
    self.scale = param(rngs, nnx.initializers.ones, (width,), ("norm",), dtype)
    self.eps = eps

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (y * self.scale[...].astype(jnp.float32)).astype(x.dtype)


class LayerNorm(nnx.Module):
  """LayerNorm (Ba et al. 2016) with a scale and optionally a bias (GPT-2 has one, MDLM's DiT
  none), computed in float32."""

  def __init__(self, width: int, rngs: nnx.Rngs, eps: float = 1e-5, bias: bool = True,
               dtype=jnp.float32):
    self.scale = param(rngs, nnx.initializers.ones, (width,), ("norm",), dtype)
    if bias:
      self.bias = param(rngs, nnx.initializers.zeros, (width,), ("norm",), dtype)
    self.eps, self.has_bias = eps, bias

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    centred = x32 - mean
    y = centred * jax.lax.rsqrt(jnp.mean(centred * centred, axis=-1, keepdims=True) + self.eps)
    y = y * self.scale[...].astype(jnp.float32)
    if self.has_bias:
      y = y + self.bias[...].astype(jnp.float32)
    return y.astype(x.dtype)


def rotary(x: jax.Array, positions: jax.Array, theta: float, layout: str = "half") -> jax.Array:
  """Rotary position embedding (Su et al. 2021) on (batch, length, heads, head_dim).

  Frequency i rotates the pair (x_i, x_{i+half}) with `layout='half'` (GPT-NeoX's rotate_half:
  Llama and Qwen2 in `transformers`, LLaDA, MDLM) or the pair (x_{2i}, x_{2i+1}) with
  'interleaved' (the paper, GPT-J, Meta's original Llama)."""
  half = x.shape[-1] // 2
  freqs = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles = positions.astype(jnp.float32)[..., None] * freqs  # (batch, length, half)
  cos, sin = jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]
  x32 = x.astype(jnp.float32)
  if layout == "interleaved":
    pairs = x32.reshape(*x.shape[:-1], half, 2)
    x1, x2 = pairs[..., 0], pairs[..., 1]
    out = jnp.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).reshape(x.shape)
  else:
    x1, x2 = x32[..., :half], x32[..., half:]
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def timestep_features(t: jax.Array, dim: int, max_period: float = 10_000.0,
                      scale: float = 1000.0) -> jax.Array:
  """Sinusoidal features of a per-token time t in [0, 1], shape (..., dim): angles
  `scale * t * max_period^(-i / half)`. The defaults are DiT's on t scaled to 0..1000; Cosmos'
  `timestep_embedding(t, max_period=10)` is `scale=1, max_period=10`."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  angles = scale * t.astype(jnp.float32)[..., None] * freqs
  return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)


class TimeLevels(NamedTuple):
  """A per-token time (batch, length) given as its few distinct values per row: `values`
  (batch, K) and each token's `index` (batch, length) into them. The backbone then computes
  the time conditioning (embedding MLP, adaLN modulation) once per value instead of once per
  token: the masked family's times are a row's time and time 0 for given tokens (K <= 2).
  Families whose times vary per token (NeoDiff, any-order) pass the plain array."""
  values: jax.Array
  index: jax.Array

  def per_token(self) -> jax.Array:
    """The time of every token (batch, length)."""
    return jnp.take_along_axis(self.values, self.index, axis=1)

  def spread(self, per_value: jax.Array) -> jax.Array:
    """Vectors of each value (batch, K, d) -> each token's (batch, length, d), or (batch, 1,
    d) when K = 1 (broadcast by its user: nothing per token is materialised). Selections, not
    a gather: XLA fuses them into the element-wise op that reads them, and their gradient is
    a sum over tokens, not a scatter."""
    out = per_value[:, :1]
    for k in range(1, per_value.shape[1]):
      out = jnp.where((self.index == k)[..., None], per_value[:, k:k + 1], out)
    return out


def attention_mask(segment_ids: jax.Array, kind: str, block_size: int = 0) -> jax.Array:
  """Boolean mask (batch, 1, length, length): True where query i may attend to key j.

  Tokens attend only within their segment (segment 0, padding, attends to padding); then
  `bidirectional` allows all such pairs, `causal` only j <= i, and `block_causal` only keys
  in the same or an earlier block of `block_size` positions (semi-autoregressive blocks).
  """
  same = segment_ids[:, :, None] == segment_ids[:, None, :]
  length = segment_ids.shape[1]
  idx = jnp.arange(length)
  if kind == "causal":
    same &= idx[:, None] >= idx[None, :]
  elif kind == "block_causal":
    block = idx // block_size
    same &= block[:, None] >= block[None, :]
  elif kind != "bidirectional":
    raise ValueError(f"unknown attention kind {kind!r}")
  return same[:, None, :, :]


def dropout(x: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
  if rate <= 0.0 or rng is None:
    return x
  keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)
