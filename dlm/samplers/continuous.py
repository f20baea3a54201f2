"""Samplers of the continuous families: reverse Gaussian diffusion over token embeddings.

`embedding_sampler` (continuous family): from z_1 ~ N(0, I) on the positions to generate (given
positions hold their clean embeddings at time 0 throughout), each step predicts x_0 (CDCD score
interpolation, with self-conditioning on the previous estimate) and moves z from t to s with
`ddpm` (the VP posterior q(z_s | z_t, x0_hat)), `ddim` (eta = 0, Song et al. 2021 eq. 12),
`euler_ode` (probability-flow ODE) or `euler_sde` (reverse SDE, Euler-Maruyama). The tokens are
the argmax of the last step's logits.

At given positions both samplers feed the network z = e(x), t = 0 and, after the first step,
x0_prev = e(x) (NeoDiff's time predictor reads e(x) there too); training feeds the same
(dlm/models/embedding_diffusion.py::self_conditioned, dlm/models/neodiff.py).

`neodiff_sampler` (NeoDiff §3.4, official `generator.py`): predict x_0, predict each token's
next time with the time predictor at the next extrinsic time, re-noise x_0 to it (noise std 1);
the extrinsic times are a uniform grid or a schedule optimised by `dlm.neodiff_schedule`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dlm.processes import gaussian
from dlm.samplers.core import Canvas, SamplerConfig, Samples

CONTINUOUS = ("ddpm", "ddim", "euler_ode", "euler_sde")
NEODIFF = ("neodiff",)


def _positions(canvas: Canvas):
  batch, length = canvas.tokens.shape
  return jnp.ones((batch, length), jnp.int32), jnp.broadcast_to(jnp.arange(length),
                                                                (batch, length))


def _decode(logits, canvas: Canvas):
  """Tokens from the final logits: the argmax (CDCD, Plaid and NeoDiff read out
  deterministically; the randomness is the diffusion's), given tokens kept."""
  return jnp.where(canvas.given, canvas.tokens, jnp.argmax(logits, axis=-1)).astype(jnp.int32)


def _start(model, cfg: SamplerConfig, rng, canvas: Canvas, times):
  """Clean embeddings of the given tokens, z_1 ~ N(0, I) elsewhere, the time grid, step keys."""
  e_given = model.embedding(canvas.tokens)
  rng_init, rng_steps = jax.random.split(rng)
  z = jnp.where(canvas.given[..., None], e_given, jax.random.normal(rng_init, e_given.shape))
  grid = 1.0 - jnp.arange(cfg.steps + 1) / cfg.steps if times is None else times
  return e_given, z, grid, rng_steps


def embedding_sampler(model, cfg: SamplerConfig, rng, canvas: Canvas,
                      times: jax.Array | None = None) -> Samples:
  seg, pos = _positions(canvas)
  given = canvas.given
  e_given, z, grid, rng_steps = _start(model, cfg, rng, canvas, times)
  schedule = model.schedule

  def body(k, state):
    z, x0_prev, _ = state
    t = jnp.where(given, 0.0, grid[k])
    s = jnp.where(given, 0.0, grid[k + 1])
    logits = model.logits(z, t, x0_prev, seg, pos)
    x0_hat = jnp.where(given[..., None], e_given, model.x0_estimate(logits))
    key = jax.random.fold_in(rng_steps, k)
    if cfg.name == "ddpm":
      z = gaussian.ddpm_step(key, z, x0_hat, t, s, schedule)
    elif cfg.name == "ddim":
      z = gaussian.ddim_step(z, x0_hat, t, s, schedule)
    else:
      z = gaussian.euler_step(key, z, x0_hat, t, s, schedule, sde=cfg.name == "euler_sde")
    z = jnp.where(given[..., None], e_given, z)
    return z, x0_hat, logits

  batch, length = canvas.tokens.shape
  init = (z, jnp.zeros_like(z), jnp.zeros((batch, length, model.embedding.table.shape[0])))
  _, _, logits = jax.lax.fori_loop(0, cfg.steps, body, init)
  tokens = _decode(logits, canvas)
  revealed = jnp.where(given, -1, cfg.steps - 1).astype(jnp.int32)
  return Samples(tokens, jnp.full((batch,), cfg.steps, jnp.int32), revealed)


def neodiff_sampler(model, cfg: SamplerConfig, rng, canvas: Canvas,
                    times: jax.Array | None = None) -> Samples:
  seg, pos = _positions(canvas)
  given = canvas.given
  e_given, z, grid, rng_steps = _start(model, cfg, rng, canvas, times)
  s0 = jnp.where(given, 0.0, 1.0)

  def body(k, state):
    z, s, x0_prev, _ = state
    x0_hat = model.x0(z, s, x0_prev, seg, pos)
    x0_hat = jnp.where(given[..., None], e_given, x0_hat)
    t_next = jnp.full((z.shape[0],), grid[k + 1])
    s_next = jnp.clip(model.predict_time(x0_hat, t_next, seg, pos), 0.0, 1.0)
    s_next = jnp.where(given, 0.0, s_next)
    z = gaussian.renoise(jax.random.fold_in(rng_steps, k), x0_hat, s_next, model.schedule,
                         exact_at_zero=False)
    z = jnp.where(given[..., None], e_given, z)
    return z, s_next, x0_hat, x0_hat

  init = (z, s0, jnp.zeros_like(z), jnp.zeros_like(z))
  _, _, _, x0_hat = jax.lax.fori_loop(0, cfg.steps, body, init)
  tokens = _decode(model.anchor_logits(x0_hat), canvas)
  batch = canvas.tokens.shape[0]
  revealed = jnp.where(given, -1, cfg.steps - 1).astype(jnp.int32)
  return Samples(tokens, jnp.full((batch,), cfg.steps, jnp.int32), revealed)
