"""Samplers of any-subset autoregressive models: sequential, and lossless speculative (ASSD).

Guo and Ermon 2025 (arXiv 2504.20456), Algorithm 1 and the official `speculative_decoding.py`.
The model is seen through `cond(tokens, levels) -> logits (batch, L, vocab)`: at a position of
level r >= 1, the logits of p(x_i | tokens at positions of level < r) (`AnyOrderAR.logits`).
Targets (the canvas's non-given positions) are decoded left to right, the order AS-ARMs are
trained in here. The model's joint is defined by one fixed mask, as a causal AR's (and as the
paper's code, whose `perm_mask` is fixed for the whole decoding): given tokens at level 0
(bidirectional among themselves, as a training row's visible tokens), the n-th target at level
n, decoded or not. A decoded token is *not* moved to level 0: its content stream would then
see later tokens, and the network (unlike exact conditionals) would give different numbers.

* `sequential`: one pass per token with those levels, p(x_σ(n) | x_σ(<n)): the reference.
* `assd`, per step with n targets decoded:
  1. draft (1 NFE): every undecoded target at level n + 1, so each of the next k is predicted
     from the given and decoded tokens only, q_j = p(x_σ(n+j) | x_σ(<=n)); x~_j ~ q_j;
  2. oracle (1 NFE): x~ put in, the sequential levels, so p_j = p(x_σ(n+j) | x_σ(<=n), x~_<j)
     exactly as `sequential` would compute it; target k+1 gives p_{k+1} as well;
  3. accept x~_j while u_j < p_j(x~_j) / q_j(x~_j); the first rejected j is redrawn from
     norm(max(p_j - q_j, 0)) (Leviathan et al. 2023); q_1 = p_1, so x~_1 is always accepted.
     If all k are accepted, a (k+1)-th token is drawn from p_{k+1} of the same oracle pass (as
     in standard speculative decoding; the paper's code skips it); it is exact as well.
  With one target left the oracle is skipped. Each step with >= 2 targets left fixes >= 2
  tokens for 2 passes, so NFE <= the number of generated tokens (the paper's guarantee), and
  the tokens are distributed exactly as `sequential` draws them (tests/test_any_order.py).

Temperature, top-k and top-p filter p and q alike, so ASSD samples the filtered sequential
distribution; [MASK] is never drawn. Rows of a batch advance independently (each its own
number of accepted tokens and its own NFE); the loop runs until every row is done, and a row
is charged only the passes it needed (the oracle only while it has >= 2 targets left).
`revealed_at` is the step (loop iteration) that fixed each token.
"""

from __future__ import annotations

from typing import Callable

import chex
import jax
import jax.numpy as jnp

from dlm.errors import DlmError
from dlm.samplers import filtering
from dlm.processes.categorical import zero_masking
from dlm.samplers.core import Canvas, SamplerConfig, Samples, register

ANY_ORDER = ("assd", "sequential")
CondLogits = Callable[[jax.Array, jax.Array], jax.Array]


def decoding_order(given: jax.Array):
  """Left to right over the non-given positions: (rank (batch, L), -1 where given;
  order (batch, L), order[b, r] = position of the r-th target (then the given positions);
  count (batch,) of targets)."""
  chex.assert_rank(given, 2)
  length = given.shape[1]
  targets = ~given
  rank = jnp.where(targets, jnp.cumsum(targets, axis=1) - 1, -1).astype(jnp.int32)
  idx = jnp.arange(length)
  order = jnp.argsort(jnp.where(targets, idx, length + idx), axis=1).astype(jnp.int32)
  return rank, order, targets.sum(axis=1).astype(jnp.int32)


def _probs(logits, sampling: SamplerConfig, mask_id: int):
  """Filtered next-token distributions (greedy: one-hot); [MASK] has probability 0."""
  logits = filtering.process(zero_masking(logits, mask_id), sampling.temperature, sampling.top_k,
                             sampling.top_p)
  if sampling.temperature <= 0:
    return jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1],
                          dtype=jnp.float64 if sampling.float64 else jnp.float32)
  return jax.nn.softmax(logits.astype(jnp.float64 if sampling.float64 else jnp.float32), axis=-1)


def _draw(probs, rng):
  """A token from each (unnormalised) distribution over the last axis."""
  return jax.random.categorical(rng, jnp.log(probs), axis=-1).astype(jnp.int32)


def _scatter(z, rows_positions, values, write):
  """z[b, pos] = value where `write`; other slots are dropped (pos out of range)."""
  batch, length = z.shape
  pos = jnp.where(write, rows_positions, length)
  rows = jnp.broadcast_to(jnp.arange(batch)[:, None], pos.shape)
  return z.at[rows, pos].set(values.astype(z.dtype), mode="drop")


def _gather(x, positions):
  return jnp.take_along_axis(x, positions[..., None], axis=1)


def sequential(cond: CondLogits, sampling: SamplerConfig, rng, canvas: Canvas,
               mask_id: int) -> Samples:
  """One pass per target, each drawn from p(x_σ(n) | decoded tokens)."""
  rank, order, count = decoding_order(canvas.given)
  batch, length = canvas.tokens.shape
  levels = rank + 1  # fixed: given 0, the n-th target n (decoded tokens keep theirs)

  def body(state):
    z, done, nfe, revealed, step = state
    active = done < count
    pos = jnp.take_along_axis(order, jnp.minimum(done, length - 1)[:, None], axis=1)
    probs = _probs(_gather(cond(z, levels), pos), sampling, mask_id)
    token = _draw(probs, jax.random.fold_in(rng, step))
    z = _scatter(z, pos, token, active[:, None])
    revealed = _scatter(revealed, pos, jnp.full_like(pos, step), active[:, None])
    return z, done + active, nfe + active, revealed, step + 1

  init = (canvas.tokens, jnp.zeros((batch,), jnp.int32), jnp.zeros((batch,), jnp.int32),
          jnp.full((batch, length), -1, jnp.int32), jnp.int32(0))
  z, _, nfe, revealed, _ = jax.lax.while_loop(lambda s: jnp.any(s[1] < count), body, init)
  return Samples(z.astype(jnp.int32), nfe, revealed)


def assd(cond: CondLogits, sampling: SamplerConfig, rng, canvas: Canvas, mask_id: int) -> Samples:
  """Any-subset speculative decoding with k = `sampling.draft_length` drafts per step."""
  k = sampling.draft_length  # >= 1 (SamplerConfig)
  rank, order, count = decoding_order(canvas.given)
  batch, length = canvas.tokens.shape
  slots = jnp.arange(k + 1)
  levels = rank + 1  # the sequential sampler's levels: given 0, the n-th target n

  def body(state):
    z, done, nfe, revealed, step = state
    remaining = count - done
    active = remaining > 0
    kk = jnp.minimum(k, remaining)  # drafts this step, per row
    window = jnp.take_along_axis(order, jnp.minimum(done[:, None] + slots, length - 1), axis=1)
    rng_draft, rng_accept, rng_fix = jax.random.split(jax.random.fold_in(rng, step), 3)

    # 1. Draft: every undecoded target predicted from the decoded tokens alone.
    draft_levels = jnp.minimum(levels, done[:, None] + 1)  # every undecoded target: n + 1
    q = _probs(_gather(cond(z, draft_levels), window[:, :k]), sampling, mask_id)
    draft = _draw(q, rng_draft)  # (batch, k)
    in_draft = slots[:k] < kk[:, None]

    # 2. Oracle: drafts in, the sequential levels: slot j sees the drafts before it (the
    # bonus slot kk all of them); the slots after kk hold [MASK] and are seen by none.
    proposed = _scatter(z, window[:, :k], draft, in_draft)
    need_oracle = active & (remaining >= 2)
    p = jax.lax.cond(
        jnp.any(need_oracle),
        lambda: _probs(_gather(cond(proposed, levels), window), sampling, mask_id),
        lambda: jnp.zeros(q.shape[:1] + (k + 1,) + q.shape[2:], q.dtype))

    # 3. Accept while u < p/q (the first draft always); redraw the first rejection.
    p_draft = jnp.take_along_axis(p[:, :k], draft[..., None], axis=-1)[..., 0]
    q_draft = jnp.take_along_axis(q, draft[..., None], axis=-1)[..., 0]
    u = jax.random.uniform(rng_accept, draft.shape, q.dtype)
    accept = (u * q_draft < p_draft).at[:, 0].set(True)
    rejected = in_draft & ~accept
    first = jnp.where(jnp.any(rejected, axis=1), jnp.argmax(rejected, axis=1), kk)
    all_accepted = first == kk
    bonus = all_accepted & (remaining > kk)
    p_first = jnp.take_along_axis(p, first[:, None, None], axis=1)[:, 0]
    q_first = jnp.take_along_axis(q, jnp.minimum(first, k - 1)[:, None, None], axis=1)[:, 0]
    residual = jnp.where(all_accepted[:, None], p_first, jnp.maximum(p_first - q_first, 0.0))
    residual = jnp.where(residual.sum(-1, keepdims=True) > 0, residual, p_first)
    fixed_token = _draw(residual, rng_fix)
    fixed = first + jnp.where(all_accepted, bonus, True).astype(jnp.int32)
    fixed = jnp.where(active, fixed, 0)

    values = jnp.where(slots[None, :] == first[:, None], fixed_token[:, None],
                       jnp.pad(draft, ((0, 0), (0, 1))))
    write = slots[None, :] < fixed[:, None]
    z = _scatter(z, window, values, write)
    revealed = _scatter(revealed, window, jnp.full_like(window, step), write)
    nfe = nfe + active + need_oracle
    return z, done + fixed, nfe, revealed, step + 1

  init = (canvas.tokens, jnp.zeros((batch,), jnp.int32), jnp.zeros((batch,), jnp.int32),
          jnp.full((batch, length), -1, jnp.int32), jnp.int32(0))
  z, _, nfe, revealed, _ = jax.lax.while_loop(lambda s: jnp.any(s[1] < count), body, init)
  return Samples(z.astype(jnp.int32), nfe, revealed)


def run(cond: CondLogits, sampling: SamplerConfig, rng, canvas: Canvas, mask_id: int) -> Samples:
  if sampling.name == "assd":
    return assd(cond, sampling, rng, canvas, mask_id)
  if sampling.name == "sequential":
    return sequential(cond, sampling, rng, canvas, mask_id)
  raise DlmError(f"{sampling.name!r} is not an any-order sampler; choose one of "
                 f"{', '.join(ANY_ORDER)}")


def any_order_sampler(model, sampling: SamplerConfig, rng, canvas: Canvas, times=None) -> Samples:
  """A sampler on an `AnyOrderAR` (one segment, positions 0..L-1)."""
  del times
  return run(model.denoise, sampling, rng, canvas, model.mask_id)


for _name in ANY_ORDER:
  register("any_order", _name)(any_order_sampler)
