"""CCDD's sampler (Zhou et al. 2025, code `ccdd/sampling.py::CCDDSampler`): both channels
reversed together on one time grid.

From x_1 = [MASK] (given positions kept, time 0) and z_1 ~ N(0, I), each step t -> s runs the
network once (twice with guidance) and
  tokens: draws x_s from the GIDD posterior q(x_s | x_t, x_hat) (dlm/processes/gidd.py; with
          p_u = 0 this is MDLM's ancestral step, unmasked tokens carried over), x_hat the
          softmax of the (temperature, top-k, top-p filtered) logits;
  z:      `ccdd` the x0-parameterised DDPM posterior q(z_s | z_t, z_hat) (Kingma et al. 2021
          eq. 33-34), `ccdd_ddim` DDIM (eta = 0).
Guidance (CCDD §4): logits = w f(x_t, z_t) + (1 - w) f(x_t, 0); w = `sampling.z_guidance`, and
w = 1 is the plain conditional prediction (one pass). The last step reveals every remaining
[MASK] from x_hat.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dlm.processes import gaussian
from dlm.processes.categorical import zero_masking
from dlm.processes.time import uniform_grid
from dlm.samplers import filtering
from dlm.samplers.core import Canvas, SamplerConfig, Samples, register

CCDD = ("ccdd", "ccdd_ddim")


def guided_outputs(model, x, z, t, t_z, w: float):
  """(logits, z_hat) with CCDD guidance w f(x, z) + (1 - w) f(x, 0); w = 1: one pass."""
  logits, z_hat = model.denoise(x, z, t, t_z)
  if w == 1.0:
    return logits, z_hat, 1
  un, _ = model.denoise(x, jnp.zeros_like(z), t, t_z)
  mask_id = model.process.mask_id  # both are -inf there: mix the rest
  mixed = w * logits.at[..., mask_id].set(0.0) + (1.0 - w) * un.at[..., mask_id].set(0.0)
  return zero_masking(mixed, mask_id), z_hat, 2


def ccdd_sampler(model, sampling: SamplerConfig, rng, canvas: Canvas,
                 times: jax.Array | None = None) -> Samples:
  batch, length = canvas.tokens.shape
  given = canvas.given
  process = model.process
  grid = uniform_grid(sampling.steps) if times is None else times
  rng_init, rng_steps = jax.random.split(rng)
  x = jnp.where(given, canvas.tokens, process.mask_id).astype(jnp.int32)
  z = jax.random.normal(rng_init, (batch, length, model.options.latent_dim))
  carry_over = process.p_uniform == 0.0

  def body(k, state):
    x, z, nfe, revealed = state
    t_z = jnp.full((batch, length), grid[k])
    s_z = jnp.full((batch, length), grid[k + 1])
    t, s = jnp.where(given, 0.0, t_z), jnp.where(given, 0.0, s_z)
    logits, z_hat, passes = guided_outputs(model, x, z, t, t_z, sampling.z_guidance)
    logits = filtering.process(logits, sampling.temperature, sampling.top_k, sampling.top_p)
    key_x, key_z = jax.random.split(jax.random.fold_in(rng_steps, k))
    if sampling.temperature == 0:
      x_hat = jax.nn.one_hot(jnp.argmax(logits, -1), logits.shape[-1])
    else:
      x_hat = jax.nn.softmax(logits, axis=-1)
    last = k == sampling.steps - 1
    post = process.posterior(x_hat, x, t, jnp.where(last, 0.0, s))
    post = jnp.where(last, x_hat, post)  # the last step reveals everything
    drawn = jax.random.categorical(key_x, jnp.log(jnp.maximum(post, 1e-30)))
    keep = given | (carry_over & (x != process.mask_id))
    new_x = jnp.where(keep, x, drawn).astype(jnp.int32)
    newly = (x == process.mask_id) & (new_x != process.mask_id)
    revealed = jnp.where(newly, k, revealed)
    if sampling.name == "ccdd_ddim":
      z = gaussian.ddim_step(z, z_hat, t_z, s_z, model.schedule)
    else:
      z = gaussian.ddpm_step(key_z, z, z_hat, t_z, s_z, model.schedule)
    return new_x, z, nfe + passes, revealed

  revealed0 = jnp.where(given, -1, sampling.steps - 1).astype(jnp.int32)
  x, _, nfe, revealed = jax.lax.fori_loop(0, sampling.steps, body,
                                          (x, z, jnp.zeros((), jnp.int32), revealed0))
  return Samples(x, jnp.full((batch,), nfe, jnp.int32), revealed)


for _name in CCDD:
  register("ccdd", _name)(ccdd_sampler)
