"""Any-subset autoregressive models (AS-ARM; Guo and Ermon 2025, arXiv 2504.20456).

An AS-ARM gives p(x_σ(i) | x_σ(<i)) for any subset of known tokens and any order of the rest.
The paper fine-tunes XLNet, whose two-stream attention (Yang et al. 2019, Sec. 2.3) keeps a
*content* stream h (a token's own embedding) apart from a *query* stream g (only its position,
here the [MASK] embedding at that position), so that a target can be predicted without seeing
itself. We run both streams through the shared backbone as one sequence of 2L tokens,
`[content ; query]`, under one boolean attention mask built from a per-position *level*:

  level 0            known tokens (visible, given, padding);
  level r >= 1       a target, predicted after every target of a lower level (at sampling a
                     decoded target keeps its level: the joint is that of one fixed mask).

  content i -> content j   iff level_j <= level_i   (known tokens see only known tokens;
                                                      a target's content sees itself too)
  query i   -> content j   iff level_j <  level_i   (never itself, never a later target)
  query i   -> query i     always (its own [MASK] + position; no token information)

all within a segment. The query output at a target is p(x_i | tokens of lower levels) (the
paper's Eq. 1 factors, one per target, in one pass). Targets at levels 1, 2, ... m predict
*jointly* (causal in the decoding order: the training objective and ASSD's oracle pass); all
targets at level 1 predict *independently* given the known tokens (ASSD's draft pass).

Training follows the paper's code (`finetune_xlnet_distributed.py`, `--perm_mask_type joint`):
a masking rate r per sequence, stratified over the batch in [min_rate, max_rate] (0.85, 0.99);
a random subset of round(r n) of the n maskable tokens becomes the targets, ordered left to
right (`order="random"`: a random order, the `--any_permutation` option); the loss is the plain
cross-entropy of every target (`scale_by_none`). The paper warms the rate up from 0.15 over
5000 steps because it fine-tunes XLNet (pretrained at 15%); `corrupt` sees no step (the shared
train step passes none), so a model trained here from scratch draws from the final range at
once.

The loss is reported as `loss`, not `nelbo`: the sum over targets is -log p(x_targets | x_known)
under the model, a conditional NLL that is *smaller* than -log p(x), not a bound on it.
"""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from dlm import config as config_lib
from dlm import registry
from dlm.errors import DlmError
from dlm.models import transformer
from dlm.models.family import layout, scored_mask
from dlm.models.transformer import Transformer, TransformerConfig
from dlm.processes import time as time_lib

ORDERS = ("left_to_right", "random")


@dataclasses.dataclass(frozen=True)
class AnyOrderConfig:
  """Config section `any_order`. Training masking rate: each row draws r (stratified over the
  batch) in [min_rate, max_rate] and round(r * n) of its n maskable tokens become targets (the
  paper's final range; its warm-up from 0.15 is for fine-tuning XLNet and is not done here)."""

  min_rate: float = 0.85
  max_rate: float = 0.99
  order: str = "left_to_right"  # the targets' order: 'left_to_right' | 'random' (any order)

  def __post_init__(self):
    if not 0.0 < self.min_rate <= self.max_rate <= 1.0:
      raise DlmError(f"any_order rates need 0 < min_rate <= max_rate <= 1, got "
                     f"[{self.min_rate}, {self.max_rate}]")
    if self.order not in ORDERS:
      raise DlmError(f"any_order.order must be one of {ORDERS}, got {self.order!r}")


def two_stream_mask(levels: jax.Array, segment_ids: jax.Array) -> jax.Array:
  """Attention mask (batch, 1, 2L, 2L) over `[content ; query]` from levels (batch, L): see the
  module docstring. True where row (query) i may attend to column (key) j."""
  chex.assert_rank(levels, 2)
  chex.assert_equal_shape((levels, segment_ids))
  batch, length = levels.shape
  same = segment_ids[:, :, None] == segment_ids[:, None, :]
  row, col = levels[:, :, None], levels[:, None, :]
  content_content = (col <= row) & same
  query_content = (col < row) & same
  query_query = jnp.broadcast_to(jnp.eye(length, dtype=bool), (batch, length, length))
  content_query = jnp.zeros((batch, length, length), bool)
  mask = jnp.concatenate([jnp.concatenate([content_content, content_query], axis=2),
                          jnp.concatenate([query_content, query_query], axis=2)], axis=1)
  return mask[:, None]


def target_levels(targets: jax.Array, order_key: jax.Array) -> jax.Array:
  """Levels 1..m of the targets by increasing `order_key` (ties: lower position first), 0 for
  every other position. targets (batch, L) bool, order_key (batch, L) float."""
  key = jnp.where(targets, order_key, jnp.inf)
  order = jnp.argsort(key, axis=1, stable=True)
  rank = jnp.argsort(order, axis=1, stable=True)  # rank of each position in that order
  return jnp.where(targets, rank + 1, 0).astype(jnp.int32)


class AnyOrderAR(nnx.Module):
  """AS-ARM on the shared backbone (no time input: `time_conditioning="none"`, as the
  autoregressive family). `denoise(tokens, levels)` is the query stream's output."""
  family = "any_order"

  def __init__(self, net_cfg: TransformerConfig, options: AnyOrderConfig, mask_id: int,
               rngs: nnx.Rngs):
    self.net = Transformer(dataclasses.replace(net_cfg, time_conditioning="none"), rngs)
    self.options = options
    self.mask_id = mask_id

  def denoise(self, tokens, levels, segment_ids=None, positions=None, *, rng=None):
    """Logits (batch, L, vocab): at each position of level r >= 1, the prediction of its token
    from the tokens at positions of level < r (their ids in `tokens`); rows of level 0 are
    returned too but mean nothing."""
    chex.assert_rank(tokens, 2)
    chex.assert_equal_shape((tokens, levels))
    length = tokens.shape[1]
    segment_ids, positions = layout(tokens.shape, segment_ids, positions)
    query = jnp.full_like(tokens, self.mask_id)
    both = lambda a, b: jnp.concatenate([a, b], axis=1)  # noqa: E731
    logits = self.net(both(tokens, query), None, both(segment_ids, segment_ids),
                      both(positions, positions), rng=rng,
                      mask=two_stream_mask(levels, segment_ids))
    return logits[:, length:]

  def corrupt(self, batch, rng):
    """Targets and their levels: per row a masking rate r, stratified over the batch in
    [min_rate, max_rate]; round(r n) of the n maskable tokens (real, not `given`) chosen at
    random; ordered left to right (or at random). Given tokens and padding stay known."""
    x = batch["tokens"]
    rows, length = x.shape
    maskable = scored_mask(batch)
    rng_rate, rng_perm, rng_pick, rng_order = jax.random.split(rng, 4)
    lo, hi = self.options.min_rate, self.options.max_rate
    rate = lo + (hi - lo) * time_lib.sample_times(rng_rate, rows)  # stratified over the batch
    rate = jax.random.permutation(rng_perm, rate)
    count = jnp.round(rate * maskable.sum(axis=1)).astype(jnp.int32)
    noise = jnp.where(maskable, jax.random.uniform(rng_pick, x.shape), 2.0)
    pick_rank = jnp.argsort(jnp.argsort(noise, axis=1), axis=1)
    scored = maskable & (pick_rank < count[:, None])
    if self.options.order == "random":
      key = jax.random.uniform(rng_order, x.shape)
    else:
      key = jnp.broadcast_to(jnp.arange(length, dtype=jnp.float32), x.shape)
    return {**batch, "levels": target_levels(scored, key), "scored": scored}

  def loss(self, noisy, *, rng=None, train: bool = True):
    """Sum of the targets' cross-entropy -log p(x_i | known, earlier targets) (nats)."""
    x, scored = noisy["tokens"], noisy["scored"]
    logits = self.denoise(x, noisy["levels"], noisy["segment_ids"], noisy["positions"],
                          rng=rng if train else None)
    picked = jnp.take_along_axis(logits, x[..., None], axis=-1)[..., 0]
    ce = jnp.where(scored, jax.nn.logsumexp(logits, axis=-1) - picked, 0.0)
    total = ce.sum()
    return total, {"loss": total, "tokens": scored.sum()}


def build(config, tokenizer, rngs: nnx.Rngs) -> AnyOrderAR:
  return AnyOrderAR(transformer.for_tokenizer(config, tokenizer),
                    config_lib.options(AnyOrderConfig, config.any_order), tokenizer.mask_id,
                    rngs)


FAMILY = registry.Family("any_order", build, sections={"any_order": AnyOrderConfig})
