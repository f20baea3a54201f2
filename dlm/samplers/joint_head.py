"""Joint sampling of several tokens per full pass (ADJUST, arXiv 2509.22738) and its baselines,
for `joint_head` models (dlm/models/joint_head.py), one `jax.lax` loop:

* `adjust`: per full pass of the base, k + 1 tokens: the lowest-entropy masked position is
  drawn from the current logits and written, then the sampler head refreshes all logits and
  hidden states (k cheap sampler passes per full pass);
* `marginal`: the same k + 1 lowest-entropy positions from one full pass's logits, each drawn
  from its marginal (parallel unmasking, the product of the marginals);
* `exact`: one token per full pass (lowest entropy first): exact sampling of the base's joint
  under this order; `steps` is ignored.

`steps` is the number of full passes: k + 1 = ceil(length / steps) tokens each (so 32 tokens
in 8 steps: 4 per pass). `Samples.nfe` counts full passes, `Samples.sampler_passes` the head's
passes; `flops` estimates both. With k = 0 (steps >= length) `adjust` and `marginal` are
`exact`, draw for draw.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from dlm.errors import DlmError
from dlm.processes.categorical import entropy
from dlm.samplers import filtering
from dlm.samplers.core import Canvas, SamplerConfig, Samples, register

MODES = ("adjust", "marginal", "exact")


def check(model, sampling: SamplerConfig, canvas: Canvas) -> None:
  del model, canvas
  if sampling.block_length or sampling.cfg_scale:
    raise DlmError("the joint_head samplers take neither block_length nor cfg_scale")


def per_pass(sampling: SamplerConfig, length: int) -> int:
  """Tokens revealed per full pass (k + 1)."""
  if sampling.name == "exact":
    return 1
  return max(1, math.ceil(length / sampling.steps))


def joint_head_sampler(model, sampling: SamplerConfig, rng, canvas: Canvas, times=None) -> Samples:
  """Fills `canvas` with `model` (a JointHead) by `sampling.name` in MODES (see the module doc)."""
  del times
  batch, length = canvas.tokens.shape
  mask_id = model.mask_id
  k1 = per_pass(sampling, length)
  passes = math.ceil(length / k1)
  refresh = sampling.name == "adjust"
  rows = jnp.arange(batch)

  def draw(logits, z, key):
    """Reveals the lowest-entropy masked position of each row (those with one)."""
    masked = z == mask_id
    score = jnp.where(masked, entropy(logits), jnp.inf)
    pos = jnp.argmin(score, axis=-1)
    row_logits = logits[rows, pos]
    processed = filtering.process(row_logits, sampling.temperature, sampling.top_k, sampling.top_p)
    token = filtering.gumbel_argmax(processed, key, sampling.temperature, float64=sampling.float64)
    active = jnp.any(masked, -1)
    z = z.at[rows, pos].set(jnp.where(active, token, z[rows, pos]))
    return z, pos, active

  def outer(i, state):
    z, nfe, head, revealed_at = state
    active = jnp.any(z == mask_id, -1)
    logits, h = model.denoise(z, canvas.given)
    nfe = nfe + active

    def inner(j, carry):
      z, logits, h, head, revealed_at = carry
      z, pos, did = draw(logits, z, jax.random.fold_in(rng, i * k1 + j))
      revealed_at = revealed_at.at[rows, pos].set(
          jnp.where(did, i * k1 + j, revealed_at[rows, pos]))
      if refresh:
        more = jnp.any(z == mask_id, -1) & (j < k1 - 1)
        new_logits, new_h = model.refine(z, h)
        logits = jnp.where(more[:, None, None], new_logits, logits)
        h = jnp.where(more[:, None, None], new_h, h)
        head = head + more
      return z, logits, h, head, revealed_at

    z, _, _, head, revealed_at = jax.lax.fori_loop(
        0, k1, inner, (z, logits, h, head, revealed_at))
    return z, nfe, head, revealed_at

  zeros = jnp.zeros((batch,), jnp.int32)
  init = (canvas.tokens, zeros, zeros, jnp.full((batch, length), -1, jnp.int32))
  z, nfe, head, revealed_at = jax.lax.fori_loop(0, passes, outer, init)
  return Samples(z, nfe, revealed_at, head)


def log_prob_exact(model, tokens, given):
  """log p(tokens) under the base's exact lowest-entropy one-token-per-pass sampler (a
  deterministic order given the tokens, so one replay of `length` full passes): the NLL of
  samples under the base model. Returns (batch,) sums over the non-given positions."""
  batch, length = tokens.shape
  mask_id = model.mask_id
  rows = jnp.arange(batch)

  def body(_, state):
    z, total = state
    logits, _ = model.denoise(z, given)
    masked = z == mask_id
    pos = jnp.argmin(jnp.where(masked, entropy(logits), jnp.inf), axis=-1)
    logp = jax.nn.log_softmax(logits[rows, pos], -1)[rows, tokens[rows, pos]]
    active = jnp.any(masked, -1)
    total = total + jnp.where(active, logp, 0.0)
    z = z.at[rows, pos].set(jnp.where(active, tokens[rows, pos], z[rows, pos]))
    return z, total

  start = jnp.where(given, tokens, mask_id)
  _, total = jax.lax.fori_loop(0, length, body, (start, jnp.zeros((batch,), jnp.float32)))
  return total


def flops(model, length: int) -> dict:
  """Forward FLOPs of one full pass of the base and one sampler pass on a sequence of `length`
  (2 per multiply-add: matmuls, attention scores and values, the output head)."""
  net = model.base.net.cfg
  d, v, m = net.width, net.vocab_size, net.mlp_dim

  def layer():
    return 2 * length * (3 * d * d + d * d + 3 * d * m) + 4 * length * length * d

  out_head = 2 * length * d * v
  full = net.depth * layer() + out_head
  sampler = layer() + 2 * length * 2 * d * d + out_head
  return {"full_pass": int(full), "sampler_pass": int(sampler)}


for _name in MODES:
  register("joint_head", _name, check=check)(joint_head_sampler)
