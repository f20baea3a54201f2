"""Cosmos' sampler (Meshchaninov et al. 2025, code `EulerDiffEqSolver`): reverse diffusion in
the autoencoder's latent space, then one decompressor pass.

From z_1 ~ N(0, I) over the N standardised latents, a grid from t = 1 down to `t_min`
(`cosmos.t_min`, 0.05; or an explicit `times` grid): each step predicts x0 (self-conditioned on
the previous estimate) and moves z with `cosmos_sde` (reverse VP-SDE, Euler-Maruyama: Cosmos'
default) or `cosmos_ddim` (DDIM, eta = 0). What reaches t_min is read out (`cfg.readout`):
  'mean' (default, as the official sampler): the last step's mean, Euler-Maruyama without its
         noise (`x_mean`; the DDIM step is deterministic anyway); `steps` passes;
  'x0'   one more x0 pass at t_min, decoded instead; `steps + 1` passes.
The latent is de-standardised, decoded by the decompressor and read out by argmax; text is cut
at the first eos as for every family. NFE counts the passes made.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dlm.processes import gaussian
from dlm.samplers.core import Canvas, SamplerConfig, Samples

LATENT = ("cosmos_sde", "cosmos_ddim")


def latent_sampler(model, cfg: SamplerConfig, rng, canvas: Canvas, t_min: float,
                   times: jax.Array | None = None) -> Samples:
  batch, length = canvas.tokens.shape
  n, k = model.latent_mean.shape
  if times is None:
    times = 1.0 - (1.0 - t_min) * jnp.arange(cfg.steps + 1) / cfg.steps
  rng_init, rng_steps = jax.random.split(rng)
  z = jax.random.normal(rng_init, (batch, n, k))

  def body(i, state):
    z, x0_prev = state
    t = jnp.full((batch, n), times[i])
    s = jnp.full((batch, n), times[i + 1])
    x0 = model.x0(z, t[:, 0], x0_prev)
    if cfg.name == "cosmos_ddim":
      z = gaussian.ddim_step(z, x0, t, s, model.schedule)
    else:
      key = jax.random.fold_in(rng_steps, i)
      z_next = gaussian.euler_step(key, z, x0, t, s, model.schedule, sde=True)
      if cfg.readout == "mean":  # the last step keeps its mean: x_mean is what is decoded
        z_mean = gaussian.euler_step(key, z, x0, t, s, model.schedule, sde=True,
                                     add_noise=False)
        z_next = jnp.where(i == cfg.steps - 1, z_mean, z_next)
      z = z_next
    return z, x0

  z, x0_prev = jax.lax.fori_loop(0, cfg.steps, body, (z, jnp.zeros((batch, n, k))))
  passes = cfg.steps
  if cfg.readout == "x0":
    z = model.x0(z, jnp.full((batch,), times[-1]), x0_prev)
    passes += 1
  tokens = jnp.argmax(model.decode(z, length), axis=-1).astype(jnp.int32)
  revealed = jnp.full((batch, length), cfg.steps, jnp.int32)
  return Samples(tokens, jnp.full((batch,), passes, jnp.int32), revealed)
