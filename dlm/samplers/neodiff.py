"""NeoDiff's sampler (NeoDiff §3.4, official `generator.py`): from z_1 ~ N(0, I) (given
positions at their clean embeddings, time 0), each step predicts x_0 (self-conditioned on the
previous estimate), predicts each token's next time with the time predictor at the next
extrinsic time, and re-noises x_0 to it (noise std 1); the extrinsic times are a uniform grid or
a schedule optimised by `dlm.neodiff_schedule` (`times`). At given positions the network and
the time predictor read e(x), as in training (dlm/models/neodiff.py). The tokens are the
argmax of the last estimate's anchor logits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dlm.processes import gaussian
from dlm.samplers.continuous import decode, start
from dlm.samplers.core import Canvas, SamplerConfig, Samples, register


@register("neodiff", "neodiff")
def neodiff_sampler(model, sampling: SamplerConfig, rng, canvas: Canvas,
                    times: jax.Array | None = None) -> Samples:
  given = canvas.given
  e_given, z, grid, rng_steps = start(model, sampling, rng, canvas, times)
  s0 = jnp.where(given, 0.0, 1.0)

  def body(k, state):
    z, s, x0_prev, _ = state
    x0_hat = model.denoise(z, s, x0_prev)
    x0_hat = jnp.where(given[..., None], e_given, x0_hat)
    t_next = jnp.full((z.shape[0],), grid[k + 1])
    s_next = jnp.clip(model.predict_time(x0_hat, t_next), 0.0, 1.0)
    s_next = jnp.where(given, 0.0, s_next)
    z = gaussian.renoise(jax.random.fold_in(rng_steps, k), x0_hat, s_next, model.schedule,
                         exact_at_zero=False)
    z = jnp.where(given[..., None], e_given, z)
    return z, s_next, x0_hat, x0_hat

  init = (z, s0, jnp.zeros_like(z), jnp.zeros_like(z))
  _, _, _, x0_hat = jax.lax.fori_loop(0, sampling.steps, body, init)
  tokens = decode(model.anchor_logits(x0_hat), canvas)
  batch = canvas.tokens.shape[0]
  revealed = jnp.where(given, -1, sampling.steps - 1).astype(jnp.int32)
  return Samples(tokens, jnp.full((batch,), sampling.steps, jnp.int32), revealed)
