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
  # The k-th largest by a full sort, not lax.top_k: in a confidence sampler whose step ran
  # under a lax.cond inside its loop, XLA:CPU (jax 0.10) returned wrong top-k thresholds
  # (tokens outside the top 1 drawn at top_k=1); not reduced to a minimal reproduction.
  kth = jnp.sort(logits, axis=-1)[..., logits.shape[-1] - k:logits.shape[-1] - k + 1]
  return jnp.where(logits < kth, NEG_INF, logits)


def top_p_filter(logits: jax.Array, p: float) -> jax.Array:
  """Nucleus filtering (Holtzman et al. 2020): the smallest set of tokens whose probability
  reaches p; the most likely token is always kept (p >= 1: all).

  Tokens are ranked by a stable sort of -logits, so among tied logits the lower index comes
  first, and the keep mask is made on that ranking and scattered back: a uniform 10-way
  distribution with p = 0.3 keeps exactly tokens 0, 1, 2. (Comparing logits with the cutoff's
  value, as HF and Dream do, keeps every token tied with it.) A set whose mass is within 1e-6
  of p counts as reaching it, so float32 cumulative sums do not add a token at an exact tie."""
  if p >= 1.0:
    return logits
  order = jnp.argsort(-logits, axis=-1, stable=True)
  sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
  probs = jax.nn.softmax(sorted_logits.astype(jnp.float32), axis=-1)
  before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly above each sorted token
  first = jnp.arange(logits.shape[-1]) == 0
  keep_sorted = (before < p - 1e-6) | first
  keep = jnp.take_along_axis(keep_sorted, jnp.argsort(order, axis=-1), axis=-1)
  return jnp.where(keep, logits, NEG_INF)


def process(logits: jax.Array, temperature: float, top_k: int = 0, top_p: float = 1.0, *,
            top_p_first: bool = False):
  """Temperature (0 means greedy: left unscaled), then top-k, then top-p (HF's
  `LogitsProcessorList` order); with `top_p_first`, top-p then top-k (Dream's
  `generation_utils.py::sample_tokens`: top_p_logits, then top_k_logits)."""
  if temperature > 0:
    logits = logits / temperature
  if top_p_first:
    return top_k_filter(top_p_filter(logits, top_p), top_k)
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
