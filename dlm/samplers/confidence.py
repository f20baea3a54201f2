"""Confidence-ordered unmasking: a scheduled number of tokens per step, the most confident first.

Each block (semi-autoregressive, `block_length`) gets `steps / blocks` steps; blocks count from
the canvas start, and those before the first one with a position to generate are skipped
(`first_step`). How many tokens each step reveals (`sampling.reveal`), per row:
* `even` (default; LLaDA's `get_num_transfer_tokens`): the block's masked tokens spread evenly
  over its steps, the remainder on the first ones;
* `dream` (Dream `generation_utils.py::_sample`): int(m (1 - s / t)) of the m tokens of the
  block still masked, with t, s consecutive points of linspace(1, 1e-3, steps + 1) over the
  block's steps, and every remaining one at the block's last step (no at-least-one rule, so a
  step may reveal nothing). Dream counts m over the whole batch (the mean); we count it per row,
  which is the same when the rows have as many tokens to generate.
At every step the denoiser proposes x_0 for all masked positions of the current block and the
k most confident are kept; the rest stay masked ("remasking"). Orders, by their papers' names:

* `low_confidence` (LLaDA): x_0 by Gumbel-max at the temperature, confidence softmax(logits)[x_0];
* `random` (LLaDA): the same x_0, random confidence; one token per step gives exact
  any-order sampling of the joint;
* `maskgit_plus` (Dream): x_0 drawn from the temperature / top-p / top-k distribution p,
  confidence p(x_0);
* `topk_margin` (Dream): confidence p(top 1) - p(top 2);
* `entropy` (Dream): confidence -H(p).
The LLaDA orders filter in HF's order (temperature, top-k, top-p; LLaDA itself has neither
filter); the Dream orders in Dream's (`sample_tokens`: temperature, top-p, then top-k).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from dlm.processes.categorical import entropy, zero_masking
from dlm.processes.time import grid_time
from dlm.samplers import filtering
from dlm.samplers.core import (Canvas, Denoiser, SamplerConfig, Samples, block_plan,
                               block_times, first_step, guided, register)

ORDERS = ("low_confidence", "random", "maskgit_plus", "topk_margin", "entropy")
DREAM_ORDERS = ("maskgit_plus", "topk_margin", "entropy")
DREAM_EPS = 1e-3  # Dream's last time point: linspace(1, eps, steps + 1)


def transfer_counts(masked_per_block: jax.Array, per_block: int) -> jax.Array:
  """(batch, blocks) masked counts -> (batch, blocks, per_block) tokens to reveal per step."""
  base = masked_per_block // per_block
  extra = masked_per_block % per_block
  return base[..., None] + (jnp.arange(per_block) < extra[..., None]).astype(jnp.int32)


def dream_count(masked: jax.Array, i, per_block: int) -> jax.Array:
  """Dream's reveal count at step i of a block's `per_block` steps, for `masked` (batch,)
  tokens still masked: int(m (1 - s / t)) on linspace(1, 1e-3, per_block + 1), all at the
  last step."""
  times = jnp.linspace(1.0, DREAM_EPS, per_block + 1)
  t, s = times[i], times[i + 1]
  k = jnp.floor(masked.astype(jnp.float32) * (1.0 - s / t)).astype(jnp.int32)
  return jnp.where(i == per_block - 1, masked, k)


def _proposal(order: str, logits, sampling: SamplerConfig, rng):
  """(x_0, confidence) per position."""
  k_draw, k_conf = jax.random.split(rng)
  processed = filtering.process(logits, sampling.temperature, sampling.top_k, sampling.top_p,
                               top_p_first=order in DREAM_ORDERS)
  x0 = filtering.gumbel_argmax(processed, k_draw, sampling.temperature, float64=sampling.float64)
  if order == "low_confidence":
    conf = jnp.take_along_axis(jax.nn.softmax(logits, -1), x0[..., None], -1)[..., 0]
  elif order == "random":
    conf = jax.random.uniform(k_conf, x0.shape)
  else:
    probs = jax.nn.softmax(processed, -1)
    if order == "maskgit_plus":
      conf = jnp.take_along_axis(probs, x0[..., None], -1)[..., 0]
    elif order == "topk_margin":
      top2 = jax.lax.top_k(probs, 2)[0]
      conf = top2[..., 0] - top2[..., 1]
    elif order == "entropy":
      conf = -entropy(processed)
    else:
      raise ValueError(f"unknown order {order!r}")
  return x0, conf


def confidence(order: str, denoise: Denoiser, sampling: SamplerConfig, rng, canvas: Canvas,
               mask_id: int) -> Samples:
  batch, length = canvas.tokens.shape
  blocks, block_len, per_block = block_plan(length, sampling)
  block_of = jnp.arange(length) // block_len
  denoise, passes = guided(denoise, canvas.given, mask_id, sampling.cfg_scale)
  generate = ~canvas.given
  per_block_masked = jnp.sum(generate.reshape(batch, blocks, block_len), axis=-1)
  counts = transfer_counts(per_block_masked, per_block)  # (batch, blocks, per_block)

  def body(j, state):
    z, nfe, revealed_at = state
    b, i = j // per_block, j % per_block
    t = grid_time(i, per_block)
    logits = zero_masking(denoise(z, block_times(t, block_of, b, canvas.given)), mask_id)
    x0, conf = _proposal(order, logits, sampling, jax.random.fold_in(rng, j))
    candidate = generate & (z == mask_id) & (block_of == b)
    conf = jnp.where(candidate, conf, -jnp.inf)
    rank = jnp.argsort(jnp.argsort(-conf, axis=-1), axis=-1)  # 0 = most confident
    if sampling.reveal == "dream":
      k = dream_count(jnp.sum(candidate, axis=-1), i, per_block)
    else:
      k = jax.lax.dynamic_index_in_dim(counts, b, axis=1, keepdims=False)[:, i]
    reveal = candidate & (rank < k[:, None])
    return (jnp.where(reveal, x0, z), nfe + passes, jnp.where(reveal, j, revealed_at))

  init = (canvas.tokens, jnp.zeros((batch,), jnp.int32), jnp.full((batch, length), -1,
                                                                   jnp.int32))
  z, nfe, revealed_at = jax.lax.fori_loop(first_step(canvas.given, block_len, per_block),
                                          jnp.int32(blocks * per_block), body, init)
  return Samples(z, nfe, revealed_at)


def confidence_sampler(order: str, model, sampling: SamplerConfig, rng, canvas: Canvas,
                        times=None) -> Samples:
  del times
  return confidence(order, model.denoise, sampling, rng, canvas, model.process.mask_id)


for _order in ORDERS:
  register("masked", _order)(functools.partial(confidence_sampler, _order))
