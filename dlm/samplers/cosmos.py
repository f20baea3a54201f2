"""Cosmos' sampler (Meshchaninov et al. 2025, code `EulerDiffEqSolver`): reverse diffusion in
the autoencoder's latent space, then one decompressor pass.

From z_1 ~ N(0, I) over the N standardised latents, a grid from t = 1 down to `t_min`
(`cosmos.t_min`, 0.05; or an explicit `times` grid): each step predicts x0 (self-conditioned on
the previous estimate) and moves z with `cosmos_sde` (reverse VP-SDE, Euler-Maruyama: Cosmos'
default) or `cosmos_ddim` (DDIM, eta = 0). What reaches t_min is read out (`sampling.readout`):
  'mean' (default, as the official sampler): the last step's mean, Euler-Maruyama without its
         noise (`x_mean`; the DDIM step is deterministic anyway); `steps` passes;
  'x0'   one more x0 pass at t_min, decoded instead; `steps + 1` passes.
The latent is de-standardised, decoded by the decompressor and read out by argmax; text is cut
at the first eos as for every family. NFE counts the passes made.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dlm.errors import DlmError
from dlm.processes import gaussian
from dlm.processes.time import uniform_grid
from dlm.samplers.core import Canvas, SamplerConfig, Samples, register

COSMOS = ("cosmos_sde", "cosmos_ddim")


def check(model, sampling: SamplerConfig, canvas: Canvas) -> None:
  """Whole rows of the autoencoder's length, from noise: no prompt, no infilling."""
  del sampling
  if model is None or canvas is None:
    return
  length = model.autoencoder.cfg.seq_len
  if canvas.tokens.shape[1] != length:
    raise DlmError(f"a Cosmos model decodes rows of exactly {length} tokens (its autoencoder's "
                   f"data.seq_len), not {canvas.tokens.shape[1]}")
  if bool(jnp.any(canvas.given)):
    raise DlmError("Cosmos samples whole rows from latent noise: prompts and infilling are not "
                   "supported")


def cosmos_sampler(model, sampling: SamplerConfig, rng, canvas: Canvas,
                   times: jax.Array | None = None) -> Samples:
  batch, length = canvas.tokens.shape
  n, k = model.latent_mean.shape
  if times is None:
    times = uniform_grid(sampling.steps, end=model.t_min)
  rng_init, rng_steps = jax.random.split(rng)
  z = jax.random.normal(rng_init, (batch, n, k))

  def body(i, state):
    z, x0_prev = state
    t = jnp.full((batch, n), times[i])
    s = jnp.full((batch, n), times[i + 1])
    x0 = model.denoise(z, t[:, 0], x0_prev)
    if sampling.name == "cosmos_ddim":
      z = gaussian.ddim_step(z, x0, t, s, model.schedule)
    else:
      key = jax.random.fold_in(rng_steps, i)
      z_next = gaussian.euler_step(key, z, x0, t, s, model.schedule, sde=True)
      if sampling.readout == "mean":  # the last step keeps its mean: x_mean is what is decoded
        z_mean = gaussian.euler_step(key, z, x0, t, s, model.schedule, sde=True,
                                     add_noise=False)
        z_next = jnp.where(i == sampling.steps - 1, z_mean, z_next)
      z = z_next
    return z, x0

  z, x0_prev = jax.lax.fori_loop(0, sampling.steps, body, (z, jnp.zeros((batch, n, k))))
  passes = sampling.steps
  if sampling.readout == "x0":
    z = model.denoise(z, jnp.full((batch,), times[-1]), x0_prev)
    passes += 1
  tokens = jnp.argmax(model.decode(z, length), axis=-1).astype(jnp.int32)
  revealed = jnp.full((batch, length), sampling.steps, jnp.int32)
  return Samples(tokens, jnp.full((batch,), passes, jnp.int32), revealed)


for _name in COSMOS:
  register("cosmos", _name, check=check)(cosmos_sampler)
