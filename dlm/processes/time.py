"""Diffusion time: drawing training times, and the grids samplers walk from t = 1 down.

`sample_times` draws one time per sequence. Antithetic (low-discrepancy) draws shift one
uniform by i / n and wrap (MD4 after Kingma et al. 2021, VDM §"low-variance"): the batch covers
[0, 1) evenly, which lowers the variance of the loss. `eps` keeps times inside
(eps, 1 - eps) for processes whose weights are singular at the ends (GIDD, CCDD's code).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

GRIDS = ("uniform", "cosine")


def sample_times(rng: jax.Array, n: int, antithetic: bool = True,
                 eps: float = 0.0) -> jax.Array:
  """n times (n,) in [eps, 1 - eps) (open at 1 - eps): stratified over the n when
  `antithetic`, independent otherwise."""
  if antithetic:
    u = jnp.mod(jax.random.uniform(rng) + jnp.arange(n) / n, 1.0)
  else:
    u = jax.random.uniform(rng, (n,))
  return eps + (1.0 - 2.0 * eps) * u if eps else u


def grid_time(i, n: int, kind: str = "uniform") -> jax.Array:
  """The time before step i of n on a grid from 1 (i = 0) to 0 (i = n): `uniform`, or md4's
  `cosine` (cos(pi/2 * i/n): more steps at late, nearly clean times)."""
  frac = jnp.asarray(i, jnp.float32) / n
  if kind == "cosine":
    return jnp.cos(math.pi / 2.0 * frac)
  return 1.0 - frac


def uniform_grid(steps: int, end: float = 0.0) -> jax.Array:
  """steps + 1 evenly spaced times from 1 down to `end` (0, or a sampler's t_min)."""
  return 1.0 - (1.0 - end) * jnp.arange(steps + 1) / steps
