"""AdamW with linear warmup and cosine decay, global-norm clipping, decay on matrices only."""

from __future__ import annotations

import jax
import optax


def learning_rate(t) -> optax.Schedule:
  if t.lr_schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=t.lr, warmup_steps=max(t.warmup_steps, 1),
        decay_steps=max(t.steps, t.warmup_steps + 1), end_value=t.lr * t.min_lr_ratio)
  if t.lr_schedule == "constant":
    return optax.join_schedules(
        [optax.linear_schedule(0.0, t.lr, max(t.warmup_steps, 1)), optax.constant_schedule(t.lr)],
        [max(t.warmup_steps, 1)])
  raise ValueError(f"unknown train.lr_schedule {t.lr_schedule!r}")


def optimizer(t, frozen=None) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimizer of a `train` config section and its learning-rate schedule. `frozen`: a
  pytree of bools over the parameters (dlm/train/pretrained.py); those get no update and no
  optimizer state."""
  schedule = learning_rate(t)
  parts = [optax.clip_by_global_norm(t.grad_clip)] if t.grad_clip > 0 else []
  parts.append(optax.adamw(
      schedule, b1=t.b1, b2=t.b2, weight_decay=t.weight_decay,
      mask=lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)))
  tx = optax.chain(*parts)
  if frozen is not None and any(jax.tree.leaves(frozen)):
    labels = jax.tree.map(lambda f: "frozen" if f else "train", frozen)
    tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
  return tx, schedule
