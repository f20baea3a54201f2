"""Left-to-right decoding of the autoregressive baseline, in the same sampler interface.

Given positions (a prompt, a pair's source) are teacher-forced; every other position is drawn
from p(x_i | x_<i) with temperature, top-k and top-p (`filtering`), greedy at temperature 0.
`autoregressive` (the default) keeps each layer's keys and values (`Transformer.decode`): one
pass fills them for the shortest prompt, then a step runs the network on one position, the one
before the token it draws. `autoregressive_full`
recomputes the causal network on the whole canvas at every step instead (the reference the
cache is tested against: the same tokens for the same key), skipping steps at given
positions. NFE is the number of generated positions in both. A row stops at the first of
`sampling.stop_ids` (eos, pads) it draws: its later free positions repeat that token; the
loop ends when every row has stopped. Position 0 has nothing to condition on, so an
unprompted canvas starts with `start_token` (eos: in packed training rows a document follows
an eos).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dlm.samplers import filtering
from dlm.samplers.core import Canvas, SamplerConfig, Samples, prompt_ends, register


def _draw(logits, sampling: SamplerConfig, rng, i):
  logits = filtering.process(logits, sampling.temperature, sampling.top_k, sampling.top_p)
  return filtering.gumbel_argmax(logits, jax.random.fold_in(rng, i), sampling.temperature,
                                 float64=sampling.float64)


@register("autoregressive", "autoregressive")
def autoregressive_sampler(model, sampling: SamplerConfig, rng, canvas: Canvas,
                           times=None) -> Samples:
  """Decoding with a key/value cache: step i feeds token i - 1 (drawn or given) at its
  position and draws token i from the logits. The positions before the first one any row
  generates (the shortest prompt) are given in every row: one causal pass over the canvas
  fills their keys and values (the later positions' it writes are overwritten, each by its
  own step, before any query sees them), and the steps start there."""
  del times
  batch, length = canvas.tokens.shape
  given = canvas.given
  stops = jnp.asarray(sampling.stop_ids or (-1,), jnp.int32)
  net = model.net
  first = jnp.maximum(jnp.min(prompt_ends(given)), 1)
  positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
  cache = jax.lax.cond(first > 1, lambda c: net.decode(canvas.tokens, positions, c)[1],
                       lambda c: c, net.kv_cache(batch, length))

  def body(state):
    i, z, nfe, stop_at, cache = state
    todo = ~given[:, i] & (stop_at == length)
    logits, cache = net.decode(z[:, i - 1][:, None], jnp.full((batch, 1), i - 1), cache)
    x = _draw(logits[:, 0], sampling, rng, i)
    stop_at = jnp.where(todo & jnp.isin(x, stops), i, stop_at)
    return i + 1, z.at[:, i].set(jnp.where(todo, x, z[:, i])), nfe + todo, stop_at, cache

  def more(state):
    i, _, _, stop_at, _ = state
    return (i < length) & jnp.any(stop_at == length)

  start = (first, canvas.tokens, jnp.zeros((batch,), jnp.int32), jnp.full((batch,), length),
           cache)
  _, z, nfe, stop_at, _ = jax.lax.while_loop(more, body, start)
  return _finish(z, nfe, stop_at, given, length)


@register("autoregressive", "autoregressive_full")
def autoregressive_full_sampler(model, sampling: SamplerConfig, rng, canvas: Canvas,
                                times=None) -> Samples:
  """Decoding that recomputes the whole canvas at each step (no cache)."""
  del times
  batch, length = canvas.tokens.shape
  given = canvas.given
  stops = jnp.asarray(sampling.stop_ids or (-1,), jnp.int32)

  def body(state):
    i, z, nfe, stop_at = state
    todo = ~given[:, i] & (stop_at == length)
    x = jax.lax.cond(jnp.any(todo), lambda z: _draw(model.denoise(z)[:, i - 1], sampling, rng, i),
                     lambda z: z[:, i], z)
    stop_at = jnp.where(todo & jnp.isin(x, stops), i, stop_at)
    return i + 1, z.at[:, i].set(jnp.where(todo, x, z[:, i])), nfe + todo, stop_at

  def more(state):
    i, _, _, stop_at = state
    return (i < length) & jnp.any(stop_at == length)

  # Position 0 has no context: it is always taken from the canvas (`start_token`).
  start = (1, canvas.tokens, jnp.zeros((batch,), jnp.int32), jnp.full((batch,), length))
  _, z, nfe, stop_at = jax.lax.while_loop(more, body, start)
  return _finish(z, nfe, stop_at, given, length)


def _finish(z, nfe, stop_at, given, length) -> Samples:
  # After a row's stop token its free positions repeat it (its text ends there).
  idx = jnp.arange(length)[None, :]
  end = jnp.take_along_axis(z, jnp.minimum(stop_at, length - 1)[:, None], axis=1)
  z = jnp.where(~given & (idx > stop_at[:, None]), end, z)
  revealed = jnp.where(given, -1, jnp.minimum(idx, stop_at[:, None])).astype(jnp.int32)
  return Samples(z.astype(jnp.int32), nfe, revealed)


def start_token(tokenizer, add_bos: bool) -> int:
  """The token an unprompted autoregressive sample starts from."""
  return tokenizer.bos_id if add_bos else tokenizer.eos_id
