"""Turning logits into tokens: temperature, top-k, top-p, and the draw itself.

Two ways to draw, both deterministic given their noise so that samplers can share it:
* `inverse_cdf(logits, u)`: one uniform per position picks the token whose cumulative
  probability first exceeds it (ancestral samplers pre-draw `u`, which makes the cached and
  uncached samplers return identical samples);
* `gumbel_argmax(logits, rng)`: the Gumbel-max trick, optionally with float64 noise (LLaDA's
  `add_gumbel_noise`, after arXiv 2409.02908: low-precision Gumbel noise lowers diversity).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NEG_INF = -jnp.inf


def top_k_filter(logits: jax.Array, k: int) -> jax.Array:
  """Keeps the k largest logits per position (k <= 0: all)."""
  if k <= 0 or k >= logits.shape[-1]:
    return logits
  kth = jax.lax.top_k(logits, k)[0][..., -1:]
  return jnp.where(logits < kth, NEG_INF, logits)


def top_p_filter(logits: jax.Array, p: float) -> jax.Array:
  """Nucleus filtering (Holtzman et al. 2020): the smallest set of tokens whose probability
  reaches p; the most likely token is always kept (p >= 1: all)."""
  if p >= 1.0:
    return logits
  sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
  probs = jax.nn.softmax(sorted_logits, axis=-1)
  before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly above each sorted token
  keep = before < p
  cutoff = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
  return jnp.where(logits < cutoff, NEG_INF, logits)


def process(logits: jax.Array, temperature: float, top_k: int = 0, top_p: float = 1.0):
  """Temperature (0 means greedy: left unscaled), then top-k, then top-p (as HF and Dream)."""
  if temperature > 0:
    logits = logits / temperature
  return top_p_filter(top_k_filter(logits, top_k), top_p)


def inverse_cdf(logits: jax.Array, u: jax.Array, temperature: float, *,
                float64: bool = False) -> jax.Array:
  """Token per position from processed logits and a uniform u (greedy if temperature is 0;
  the logits are already divided by the temperature)."""
  if temperature <= 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  dtype = jnp.float64 if float64 else jnp.float32
  probs = jax.nn.softmax(logits.astype(dtype), axis=-1)
  cdf = jnp.cumsum(probs, axis=-1)
  u = u.astype(dtype)[..., None] * cdf[..., -1:]
  token = jnp.sum(cdf <= u, axis=-1)  # first index whose cdf exceeds u
  return jnp.minimum(token, logits.shape[-1] - 1).astype(jnp.int32)


def gumbel_argmax(logits: jax.Array, rng: jax.Array, temperature: float, *,
                  float64: bool = False) -> jax.Array:
  """argmax(logits + Gumbel noise) on processed logits (already divided by T): a sample from
  their softmax; greedy at T = 0."""
  if temperature <= 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  dtype = jnp.float64 if float64 else jnp.float32
  g = jax.random.gumbel(rng, logits.shape, dtype)
  return jnp.argmax(logits.astype(dtype) + g, axis=-1).astype(jnp.int32)
