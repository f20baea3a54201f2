"""Confidence-ordered unmasking: a scheduled number of tokens per step, the most confident first.

Each block (semi-autoregressive, `block_length`) gets `steps / blocks` steps; blocks count from
each row's prompt end as LLaDA's `generate` does (`blocks_from='prompt'`; or from the canvas
start, `'canvas'`), and a step at which no row has a token left in the block costs no pass and
no NFE (`core.block_layout`). How many tokens each step reveals (`sampling.reveal`), per row:
* `even` (default; LLaDA's `get_num_transfer_tokens`): the block's masked tokens spread evenly
  over its steps, the remainder on the first ones;
* `dream` (Dream `generation_utils.py::_sample`): int(m (1 - s / t)) of the m tokens of the
  block still masked, with t, s consecutive points of linspace(1, 1e-3, steps + 1) over the
  block's steps, and every remaining one at the block's last step (no at-least-one rule, so a
  step may reveal nothing). Dream counts m over the whole batch (the mean); we count it per row,
  which is the same when the rows have as many tokens to generate.
* `threshold` (Fast-dLLM, Wu et al. 2025, parallel decoding): every masked token of the block
  whose confidence exceeds the threshold, and at least the most confident one, at each step
  until the block is done (steps per block vary; `steps` is unused);
* `factor` (Fast-dLLM's factor rule): the leading n of the sorted confidences while
  c_n >= 1 - factor / (n + 1), at least one.
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
from dlm.samplers.core import (CachedDenoiser, Canvas, Denoiser, SamplerConfig, Samples,
                               block_layout, block_times, guided, prompt_ends, register)

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


def _factor_count(conf: jax.Array, factor: float) -> jax.Array:
  """Fast-dLLM's factor rule (`get_transfer_index_dynamic`): with the confidences sorted,
  c_1 >= c_2 >= ..., reveal the leading n while c_n >= 1 - factor / (n + 1), at least one
  (batch,). The official code also reveals the last candidate when only it fails; here it
  stays masked."""
  ordered = -jnp.sort(-conf, axis=-1)  # non-candidates are -inf, last
  n = jnp.arange(1, conf.shape[-1] + 1)
  ok = (ordered >= 1.0 - factor / (n + 1)) | (n == 1)
  ok &= ordered > -jnp.inf
  return jnp.maximum(jnp.sum(jnp.cumprod(ok, axis=-1), axis=-1), 1)


def _masked_per_block(generate, block_of, blocks: int) -> jax.Array:
  """(batch, blocks): how many positions each row generates in each block."""
  return jnp.sum(generate[..., None] & (block_of[..., None] == jnp.arange(blocks)), axis=1)


class _Blocks:
  """A canvas's blocks (`core.block_layout`) and what a step needs to reveal in one: the
  block's positions in each row, its candidates, the reveal counts."""

  def __init__(self, order: str, sampling: SamplerConfig, rng, canvas: Canvas, mask_id: int):
    self.order, self.sampling, self.rng, self.mask_id = order, sampling, rng, mask_id
    self.given = canvas.given
    self.batch, self.length = canvas.tokens.shape
    (self.block_of, self.blocks, self.block_len, self.per_block,
     self.start) = block_layout(canvas.given, sampling)
    generate = ~canvas.given
    self.counts = transfer_counts(_masked_per_block(generate, self.block_of, self.blocks),
                                  self.per_block)  # (batch, blocks, per_block)
    self.row_start = (prompt_ends(canvas.given) if sampling.blocks_from == "prompt"
                      else jnp.zeros((self.batch,), jnp.int32))[:, None]
    self.rows = jnp.arange(self.batch)[:, None]

  def positions(self, b) -> jax.Array:
    """Block b's canvas positions in each row (batch, block_len); past the canvas: dropped."""
    return self.row_start + b * self.block_len + jnp.arange(self.block_len)

  def candidates(self, z, b) -> jax.Array:
    """(batch, block_len): block b's positions still to reveal."""
    pos = self.positions(b)
    at = jnp.minimum(pos, self.length - 1)
    return ((pos < self.length) & ~jnp.take_along_axis(self.given, at, axis=1)
            & (jnp.take_along_axis(z, at, axis=1) == self.mask_id))

  def times(self, b, i) -> jax.Array:
    """Per-token time (batch, length) at step i of block b."""
    t = grid_time(jnp.minimum(i, self.per_block - 1), self.per_block)
    return block_times(t, self.block_of, b, self.given)

  def reveal(self, logits, z, revealed_at, b, i, j, candidate):
    """Step j (block b, its step i) from the block's logits (batch, block_len, vocab) and
    `candidates`: the proposals drawn at its positions, the chosen ones written into z and
    `revealed_at`."""
    sampling = self.sampling
    x0, conf = _proposal(self.order, zero_masking(logits, self.mask_id), sampling,
                         jax.random.fold_in(self.rng, j))
    conf = jnp.where(candidate, conf, -jnp.inf)
    rank = jnp.argsort(jnp.argsort(-conf, axis=-1), axis=-1)  # 0 = most confident
    if sampling.threshold > 0:  # the best one, and every one above the threshold
      chosen = candidate & ((rank == 0) | (conf > sampling.threshold))
    else:
      if sampling.factor > 0:
        k = _factor_count(conf, sampling.factor)
      elif sampling.reveal == "dream":
        k = dream_count(jnp.sum(candidate, axis=-1), i, self.per_block)
      else:
        k = jax.lax.dynamic_index_in_dim(self.counts, b, axis=1, keepdims=False)[:, i]
      chosen = candidate & (rank < k[:, None])
    pos = self.positions(b)
    at = jnp.minimum(pos, self.length - 1)
    z = z.at[self.rows, pos].set(jnp.where(chosen, x0, jnp.take_along_axis(z, at, axis=1)),
                                 mode="drop")
    revealed_at = revealed_at.at[self.rows, pos].set(
        jnp.where(chosen, j, jnp.take_along_axis(revealed_at, at, axis=1)), mode="drop")
    return z, revealed_at

  def of_block(self, logits, b) -> jax.Array:
    """Canvas logits (batch, length, vocab) -> the block's (batch, block_len, vocab)."""
    at = jnp.minimum(self.positions(b), self.length - 1)
    return jnp.take_along_axis(logits, at[..., None], axis=1)

  def adaptive(self) -> bool:
    return self.sampling.threshold > 0 or self.sampling.factor > 0

  def init(self, tokens) -> tuple:
    return (tokens, jnp.zeros((self.batch,), jnp.int32),
            jnp.full((self.batch, self.length), -1, jnp.int32))


def confidence(order: str, denoise: Denoiser, sampling: SamplerConfig, rng, canvas: Canvas,
               mask_id: int) -> Samples:
  """Confidence-ordered unmasking of a canvas (see the module docstring): a fixed number of
  steps per block, or with `threshold` / `factor` as many steps as the block needs. Each step
  draws proposals at the current block's positions only."""
  blk = _Blocks(order, sampling, rng, canvas, mask_id)
  denoise, passes = guided(denoise, canvas.given, mask_id, sampling.cfg_scale)

  def step(state, j, b, i):
    """One pass at global step j, block b, its step i; nothing when no row has a token to
    reveal in block b (no pass, no NFE)."""
    z, nfe, revealed_at = state
    candidate = blk.candidates(z, b)
    active = jnp.any(candidate, axis=-1)

    def reveal_some(_):
      logits = blk.of_block(denoise(z, blk.times(b, i)), b)
      new_z, new_revealed_at = blk.reveal(logits, z, revealed_at, b, i, j, candidate)
      return new_z, nfe + passes * active, new_revealed_at

    return jax.lax.cond(jnp.any(active), reveal_some, lambda _: state, None)

  init = blk.init(canvas.tokens)
  if not blk.adaptive():
    z, nfe, revealed_at = jax.lax.fori_loop(
        blk.start, jnp.int32(blk.blocks * blk.per_block),
        lambda j, state: step(state, j, j // blk.per_block, j % blk.per_block), init)
    return Samples(z, nfe, revealed_at)

  # As many steps as each block needs: the next block starts when no row has a mask left in
  # this one (each step reveals at least one token per active row).
  def body(carry):
    state, j, b, i = carry
    done = ~jnp.any(blk.candidates(state[0], b))
    state = jax.lax.cond(done, lambda: state, lambda: step(state, j, b, i))
    return (state, j + jnp.where(done, 0, 1), b + done, jnp.where(done, 0, i + 1))

  state, _, _, _ = jax.lax.while_loop(lambda c: c[2] < blk.blocks, body,
                                      (init, jnp.int32(0), jnp.int32(0), jnp.int32(0)))
  return Samples(*state)


def cached_confidence(order: str, denoiser: CachedDenoiser, sampling: SamplerConfig, rng,
                      canvas: Canvas, mask_id: int) -> Samples:
  """`confidence` with Fast-dLLM's approximate key/value cache (Wu et al. 2025, `generate.py`:
  `generate_with_prefix_cache`, `generate_with_dual_cache`). Each block's first step is a full
  pass that refreshes the cache; its other steps run the network on a window only: the block
  and every position after it (`prefix`: the prompt and the finished blocks are read from the
  cache) or the block alone (`dual`: the masked suffix too), attending to the cache as it was
  at the refresh. A backbone with shifted logits (Dream: output i predicts token i + 1) also
  computes the position before the window. With `cache_refresh=k` the cache is also refreshed
  (a full pass instead of a window) at every k-th step of a block, so with k = 1 nothing is
  stale and the samples are `confidence`'s. Proposals are drawn exactly as there (the same
  keys, positions and noise); NFE counts full and window passes alike. Departures from
  Fast-dLLM: blocks follow `blocks_from` (its code counts them from the prompt end), and the
  prefix window ends with the generation (its canvases have nothing after it). Blocks are
  unrolled in the program, as each block's prefix window has its own size."""
  blk = _Blocks(order, sampling, rng, canvas, mask_id)
  batch, length, block_len = blk.batch, blk.length, blk.block_len
  lead = int(denoiser.shifted)
  positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
  everything = jnp.ones((batch, 1, length, length), bool)

  def run_block(carry, b: int):
    size = block_len if sampling.cache == "dual" else (blk.blocks - b) * block_len
    first = jnp.maximum(blk.positions(b)[:, :1] - lead, 0)  # (batch, 1)
    window = first + jnp.arange(size + lead)  # (batch, s); past the canvas: dropped
    inside = jnp.minimum(window, length - 1)
    in_window = blk.positions(b) - first  # the block's place among the window's outputs
    sees_all = jnp.ones((batch, 1, window.shape[1], length), bool)

    def logits_of(z, cache, i):
      t = blk.times(b, i)

      def full(cache):
        logits, cache = denoiser.window(z, t, positions, cache, everything)
        return blk.of_block(logits, b), cache

      def windowed(cache):
        logits, cache = denoiser.window(jnp.take_along_axis(z, inside, axis=1),
                                        jnp.take_along_axis(t, inside, axis=1), window, cache,
                                        sees_all)
        return jnp.take_along_axis(logits, in_window[..., None], axis=1), cache

      refresh = (i == 0) | ((sampling.cache_refresh > 0) &
                            (i % max(sampling.cache_refresh, 1) == 0))
      return jax.lax.cond(refresh, full, windowed, cache)

    def step(carry):
      z, nfe, revealed_at, cache, j, i = carry
      candidate = blk.candidates(z, b)
      logits, cache = logits_of(z, cache, i)
      z, revealed_at = blk.reveal(logits, z, revealed_at, b, i, j, candidate)
      active = jnp.any(candidate, axis=-1)
      return z, nfe + active, revealed_at, cache, j + 1, i + 1

    def pending(carry):
      return jnp.any(blk.candidates(carry[0], b))

    carry = (*carry, jnp.int32(0))
    if blk.adaptive():
      carry = jax.lax.while_loop(pending, step, carry)
    else:  # a step with nothing left to reveal costs no pass, as in `confidence`
      carry = jax.lax.fori_loop(0, blk.per_block, lambda _, c: jax.lax.cond(
          pending(c), step, lambda c: (*c[:4], c[4] + 1, c[5] + 1), c), carry)
    return carry[:5]

  carry = (*blk.init(canvas.tokens), denoiser.empty(batch, length), jnp.int32(0))
  for b in range(blk.blocks):
    carry = run_block(carry, b)
  return Samples(*carry[:3])


def confidence_sampler(order: str, model, sampling: SamplerConfig, rng, canvas: Canvas,
                       times=None) -> Samples:
  del times
  if sampling.cache != "none":
    denoiser = CachedDenoiser(model.net.kv_cache, model.denoise_cached,
                              model.net.cfg.shift_logits)
    return cached_confidence(order, denoiser, sampling, rng, canvas, model.process.mask_id)
  return confidence(order, model.denoise, sampling, rng, canvas, model.process.mask_id)


for _order in ORDERS:
  register("masked", _order)(functools.partial(confidence_sampler, _order))
