"""Left-to-right decoding of the autoregressive baseline, in the same sampler interface.

Given positions (a prompt, a pair's source) are teacher-forced; every other position is drawn
from p(x_i | x_<i) with temperature, top-k and top-p (`filtering`), greedy at temperature 0.
Each step recomputes the causal network on the whole canvas (no KV cache: the baseline is a
judge and a reference, not a serving path); steps at given positions are skipped, so NFE is
the number of generated positions. Position 0 has nothing to condition on, so an unprompted
canvas starts with `start_token` (eos: in packed training rows a document follows an eos).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dlm.samplers import filtering
from dlm.samplers.core import Canvas, SamplerConfig, Samples

AUTOREGRESSIVE = ("autoregressive",)


def autoregressive(model, cfg: SamplerConfig, rng, canvas: Canvas) -> Samples:
  batch, length = canvas.tokens.shape
  given = canvas.given
  positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
  segments = jnp.ones((batch, length), jnp.int32)

  def body(i, state):
    z, nfe = state
    todo = ~given[:, i]

    def draw(z):
      logits = model.net(z, None, segments, positions)[:, i - 1]
      logits = filtering.process(logits, cfg.temperature, cfg.top_k, cfg.top_p)
      return filtering.gumbel_argmax(logits, jax.random.fold_in(rng, i), cfg.temperature,
                                     float64=cfg.float64)

    x = jax.lax.cond(jnp.any(todo), draw, lambda z: z[:, i], z)
    return z.at[:, i].set(jnp.where(todo, x, z[:, i])), nfe + todo

  # Position 0 has no context: it is always taken from the canvas (`start_token`).
  z, nfe = jax.lax.fori_loop(1, length, body, (canvas.tokens, jnp.zeros((batch,), jnp.int32)))
  revealed = jnp.where(given, -1, jnp.arange(length)[None, :]).astype(jnp.int32)
  return Samples(z.astype(jnp.int32), nfe, revealed)


def start_token(tokenizer, add_bos: bool) -> int:
  """The token an unprompted autoregressive sample starts from."""
  return tokenizer.bos_id if add_bos else tokenizer.eos_id
