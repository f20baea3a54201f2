"""Samplers of the continuous families: reverse Gaussian diffusion over token embeddings.

`continuous_sampler` (continuous family): from z_1 ~ N(0, I) on the positions to generate (given
positions hold their clean embeddings at time 0 throughout), each step predicts x_0 (CDCD score
interpolation, with self-conditioning on the previous estimate) and moves z from t to s with
`ddpm` (the VP posterior q(z_s | z_t, x0_hat)), `ddim` (eta = 0, Song et al. 2021 eq. 12),
`euler_ode` (probability-flow ODE) or `euler_sde` (reverse SDE, Euler-Maruyama). The tokens are
the argmax of the last step's logits.

At given positions the sampler feeds the network z = e(x), t = 0 and, after the first step,
x0_prev = e(x); training feeds the same (dlm/models/family.py::self_conditioned).

NeoDiff's sampler, which shares `start` and `decode`, is dlm/samplers/neodiff.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


from dlm.processes import gaussian
from dlm.processes.time import uniform_grid
from dlm.samplers.core import Canvas, SamplerConfig, Samples, register

CONTINUOUS = ("ddpm", "ddim", "euler_ode", "euler_sde")


def decode(logits, canvas: Canvas):
  """Tokens from the final logits: the argmax (CDCD, Plaid and NeoDiff read out
  deterministically; the randomness is the diffusion's), given tokens kept."""
  return jnp.where(canvas.given, canvas.tokens, jnp.argmax(logits, axis=-1)).astype(jnp.int32)


def start(model, sampling: SamplerConfig, rng, canvas: Canvas, times):
  """Clean embeddings of the given tokens, z_1 ~ N(0, I) elsewhere, the time grid, step keys."""
  e_given = model.embedding(canvas.tokens)
  rng_init, rng_steps = jax.random.split(rng)
  z = jnp.where(canvas.given[..., None], e_given, jax.random.normal(rng_init, e_given.shape))
  grid = uniform_grid(sampling.steps) if times is None else times
  return e_given, z, grid, rng_steps


def continuous_sampler(model, sampling: SamplerConfig, rng, canvas: Canvas,
                      times: jax.Array | None = None) -> Samples:
  given = canvas.given
  e_given, z, grid, rng_steps = start(model, sampling, rng, canvas, times)
  schedule = model.schedule

  def body(k, state):
    z, x0_prev, _ = state
    t = jnp.where(given, 0.0, grid[k])
    s = jnp.where(given, 0.0, grid[k + 1])
    logits = model.denoise(z, t, x0_prev)
    x0_hat = jnp.where(given[..., None], e_given, model.x0_estimate(logits))
    key = jax.random.fold_in(rng_steps, k)
    if sampling.name == "ddpm":
      z = gaussian.ddpm_step(key, z, x0_hat, t, s, schedule)
    elif sampling.name == "ddim":
      z = gaussian.ddim_step(z, x0_hat, t, s, schedule)
    else:
      z = gaussian.euler_step(key, z, x0_hat, t, s, schedule, sde=sampling.name == "euler_sde")
    z = jnp.where(given[..., None], e_given, z)
    return z, x0_hat, logits

  batch, length = canvas.tokens.shape
  init = (z, jnp.zeros_like(z), jnp.zeros((batch, length, model.embedding.table.shape[0])))
  _, _, logits = jax.lax.fori_loop(0, sampling.steps, body, init)
  tokens = decode(logits, canvas)
  revealed = jnp.where(given, -1, sampling.steps - 1).astype(jnp.int32)
  return Samples(tokens, jnp.full((batch,), sampling.steps, jnp.int32), revealed)


for _name in CONTINUOUS:
  register("continuous", _name)(continuous_sampler)
