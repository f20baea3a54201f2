"""CCDD's sampler (Zhou et al. 2025, code `ccdd/sampling.py::CCDDSampler`): both channels
reversed together on one time grid.

From x_1 = [MASK] (given positions kept, time 0) and z_1 ~ N(0, I), each step t -> s runs the
network once (twice with guidance) and
  tokens: draws x_s from the GIDD posterior q(x_s | x_t, x_hat) (dlm/processes/gidd.py; with
          p_u = 0 this is MDLM's ancestral step, unmasked tokens carried over), x_hat the
          softmax of the (temperature, top-k, top-p filtered) logits;
  z:      `ccdd` the x0-parameterised DDPM posterior q(z_s | z_t, z_hat) (Kingma et al. 2021
          eq. 33-34), `ccdd_ddim` DDIM (eta = 0).
Guidance (CCDD §4): logits = w f(x_t, z_t) + (1 - w) f(x_t, 0); w = `cfg.z_guidance`, and
w = 1 is the plain conditional prediction (one pass). The last step reveals every remaining
[MASK] from x_hat.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dlm.processes import gaussian
from dlm.samplers import filtering
from dlm.samplers.core import Canvas, SamplerConfig, Samples

CCDD = ("ccdd", "ccdd_ddim")


def guided_outputs(model, x, z, t, t_z, seg, pos, w: float):
  """(logits, z_hat) with CCDD guidance w f(x, z) + (1 - w) f(x, 0); w = 1: one pass."""
  logits, z_hat = model.forward(x, z, t, t_z, seg, pos)
  if w == 1.0:
    return logits, z_hat, 1
  un, _ = model.forward(x, jnp.zeros_like(z), t, t_z, seg, pos)
  mask_col = jnp.arange(logits.shape[-1]) == model.process.mask_id
  mixed = jnp.where(mask_col, -jnp.inf, w * logits + (1.0 - w) * jnp.where(mask_col, 0.0, un))
  return mixed, z_hat, 2


def ccdd_sampler(model, cfg: SamplerConfig, rng, canvas: Canvas,
                 times: jax.Array | None = None) -> Samples:
  batch, length = canvas.tokens.shape
  given = canvas.given
  process = model.process
  seg = jnp.ones((batch, length), jnp.int32)
  pos = jnp.broadcast_to(jnp.arange(length), (batch, length))
  grid = 1.0 - jnp.arange(cfg.steps + 1) / cfg.steps if times is None else times
  rng_init, rng_steps = jax.random.split(rng)
  x = jnp.where(given, canvas.tokens, process.mask_id).astype(jnp.int32)
  z = jax.random.normal(rng_init, (batch, length, model.cfg.latent_dim))
  carry_over = process.p_uniform == 0.0

  def body(k, state):
    x, z, nfe, revealed = state
    t_z = jnp.full((batch, length), grid[k])
    s_z = jnp.full((batch, length), grid[k + 1])
    t, s = jnp.where(given, 0.0, t_z), jnp.where(given, 0.0, s_z)
    logits, z_hat, passes = guided_outputs(model, x, z, t, t_z, seg, pos, cfg.z_guidance)
    logits = filtering.process(logits, cfg.temperature, cfg.top_k, cfg.top_p)
    key_x, key_z = jax.random.split(jax.random.fold_in(rng_steps, k))
    if cfg.temperature == 0:
      x_hat = jax.nn.one_hot(jnp.argmax(logits, -1), logits.shape[-1])
    else:
      x_hat = jax.nn.softmax(logits, axis=-1)
    last = k == cfg.steps - 1
    post = process.posterior(x_hat, x, t, jnp.where(last, 0.0, s))
    post = jnp.where(last, x_hat, post)  # the last step reveals everything
    drawn = jax.random.categorical(key_x, jnp.log(jnp.maximum(post, 1e-30)))
    keep = given | (carry_over & (x != process.mask_id))
    new_x = jnp.where(keep, x, drawn).astype(jnp.int32)
    newly = (x == process.mask_id) & (new_x != process.mask_id)
    revealed = jnp.where(newly, k, revealed)
    if cfg.name == "ccdd_ddim":
      z = gaussian.ddim_step(z, z_hat, t_z, s_z, model.schedule)
    else:
      z = gaussian.ddpm_step(key_z, z, z_hat, t_z, s_z, model.schedule)
    return new_x, z, nfe + passes, revealed

  revealed0 = jnp.where(given, -1, cfg.steps - 1).astype(jnp.int32)
  x, _, nfe, revealed = jax.lax.fori_loop(0, cfg.steps, body,
                                          (x, z, jnp.zeros((), jnp.int32), revealed0))
  return Samples(x, jnp.full((batch,), nfe, jnp.int32), revealed)
