"""Ancestral sampling of masked diffusion (MD4 §4, MDLM eq. 6), plain and cached.

From time t to s < t a masked token is revealed with probability
(alpha(s) - alpha(t)) / (1 - alpha(t)), its value drawn from the denoiser's x_0 distribution at
z_t; revealed tokens never change. Whether a token is revealed at a step does not depend on
the model, so each token's reveal step can be drawn up front: a token still masked at t = 1 is
still masked after the step ending at s with probability (1 - alpha(s)) / (1 - alpha(1)).

Blocks (`block_length`) start at each row's prompt end or at the canvas start
(`core.block_layout`). `ancestral` calls the denoiser at every step (NFE = steps; with blocks
from the canvas start, less the steps of a prompt's leading blocks). `ancestral_cache` calls it
only at
the steps where a sequence reveals something: between two such steps z does not change, so the
denoiser's output is the one it would have given (MDLM's `ddpm_cache`, made per sequence and
exact: each sequence jumps to its own next reveal step, at that step's time). Both draw the
tokens from the same pre-drawn uniforms, so for one RNG key they return the same samples.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dlm.processes.categorical import zero_masking
from dlm.processes.schedules import MaskingSchedule
from dlm.processes.time import grid_time
from dlm.samplers import filtering
from dlm.samplers.core import (Canvas, Denoiser, SamplerConfig, Samples, block_layout,
                               block_times, guided, register)


def reveal_steps(schedule: MaskingSchedule, u: jax.Array, n: int, grid: str) -> jax.Array:
  """Local step (0..n-1) at which a token masked at t = 1 is revealed, from a uniform u."""
  after = grid_time(jnp.arange(1, n + 1), n, grid)  # time after each step
  a1 = schedule.alpha(jnp.ones(()))
  revealed_by = (schedule.alpha(after) - a1) / (1.0 - a1)  # P(revealed by end of step k)
  revealed_by = revealed_by.at[-1].set(jnp.inf)  # the last step reveals whatever is left
  return jnp.sum(u[..., None] >= revealed_by, axis=-1).astype(jnp.int32)


def _setup(schedule, sampling, rng, canvas):
  batch, length = canvas.tokens.shape
  block_of, blocks, _, per_block, start = block_layout(canvas.given, sampling)
  k_reveal, k_draw = jax.random.split(rng)
  u_reveal = jax.random.uniform(k_reveal, (batch, length))
  u_draw = jax.random.uniform(k_draw, (batch, length),
                              jnp.float64 if sampling.float64 else jnp.float32)
  step = block_of * per_block + reveal_steps(schedule, u_reveal, per_block, sampling.grid)
  return blocks, start, per_block, block_of, u_draw, step


def _draw(logits, u_draw, sampling, mask_id):
  logits = filtering.process(zero_masking(logits, mask_id), sampling.temperature, sampling.top_k,
                             sampling.top_p)
  return filtering.inverse_cdf(logits, u_draw, sampling.temperature, float64=sampling.float64)


def ancestral(denoise: Denoiser, schedule: MaskingSchedule, sampling: SamplerConfig, rng,
              canvas: Canvas, mask_id: int) -> Samples:
  blocks, start, per_block, block_of, u_draw, step = _setup(schedule, sampling, rng, canvas)
  denoise, passes = guided(denoise, canvas.given, mask_id, sampling.cfg_scale)
  generate = ~canvas.given

  def body(j, state):
    z, nfe, revealed_at = state
    t = grid_time(j % per_block, per_block, sampling.grid)
    logits = denoise(z, block_times(t, block_of, j // per_block, canvas.given))
    x = _draw(logits, u_draw, sampling, mask_id)
    reveal = generate & (step == j) & (z == mask_id)
    return (jnp.where(reveal, x, z), nfe + passes, jnp.where(reveal, j, revealed_at))

  batch = canvas.tokens.shape[0]
  init = (canvas.tokens, jnp.zeros((batch,), jnp.int32),
          jnp.full(canvas.tokens.shape, -1, jnp.int32))
  z, nfe, revealed_at = jax.lax.fori_loop(start, jnp.int32(blocks * per_block), body, init)
  return Samples(z, nfe, revealed_at)


def ancestral_cache(denoise: Denoiser, schedule: MaskingSchedule, sampling: SamplerConfig, rng,
                    canvas: Canvas, mask_id: int) -> Samples:
  blocks, _, per_block, block_of, u_draw, step = _setup(schedule, sampling, rng, canvas)
  denoise, passes = guided(denoise, canvas.given, mask_id, sampling.cfg_scale)
  generate = ~canvas.given
  total = blocks * per_block

  def next_step(z):
    pending = generate & (z == mask_id)
    return jnp.min(jnp.where(pending, step, total), axis=1)  # (batch,); total when done

  def cond(state):
    return jnp.any(next_step(state[0]) < total)

  def body(state):
    z, nfe, revealed_at = state
    j = next_step(z)[:, None]  # each sequence at its own next reveal step
    active = j[:, 0] < total
    t = grid_time(j % per_block, per_block, sampling.grid)
    logits = denoise(z, block_times(t, block_of, j // per_block, canvas.given))
    x = _draw(logits, u_draw, sampling, mask_id)
    reveal = generate & (step == j) & (z == mask_id)
    return (jnp.where(reveal, x, z), nfe + passes * active, jnp.where(reveal, j, revealed_at))

  batch = canvas.tokens.shape[0]
  init = (canvas.tokens, jnp.zeros((batch,), jnp.int32),
          jnp.full(canvas.tokens.shape, -1, jnp.int32))
  z, nfe, revealed_at = jax.lax.while_loop(cond, body, init)
  return Samples(z, nfe, revealed_at)


@register("masked", "ancestral")
def ancestral_sampler(model, sampling: SamplerConfig, rng, canvas: Canvas, times=None) -> Samples:
  del times
  return ancestral(model.denoise, model.process.schedule, sampling, rng, canvas,
                   model.process.mask_id)


@register("masked", "ancestral_cache")
def ancestral_cache_sampler(model, sampling: SamplerConfig, rng, canvas: Canvas,
                            times=None) -> Samples:
  del times
  return ancestral_cache(model.denoise, model.process.schedule, sampling, rng, canvas,
                         model.process.mask_id)
