"""The jitted train and eval steps, shared by every family.

A family model exposes two methods:
  `corrupt(batch, rng) -> noisy`    the forward process on the whole batch (no network);
  `loss(noisy, rng=, train=) -> (total, metrics)`   the network and the bound, as sums.
Corrupting the whole batch first makes gradient accumulation exact: the micro-batches see the
same noise as one big batch would, so `train.grad_accum` changes memory, not the update.

The step is one `jax.jit` with `NamedSharding`s in and out and the state donated; its input
and output shardings match, so it compiles once. A step whose loss, gradient or update is not
finite changes nothing but the step counter and reports `skipped = 1` (maxtext and
levanter skip such steps the same way): one bad batch cannot poison every parameter.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from dlm.train.state import TrainState

LN2 = math.log(2.0)


def _split_micro(x, accum: int):
  """(B, ...) -> (accum, B / accum, ...), micro-batch j = rows j, accum + j, ... so that each
  device keeps its rows (the batch is sharded in contiguous blocks)."""
  return x.reshape((x.shape[0] // accum, accum) + x.shape[1:]).swapaxes(0, 1)


def _all_finite(tree) -> jax.Array:
  """Every element finite (leaf by leaf: a norm of huge but finite values would overflow)."""
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def summarize(metrics: dict) -> dict:
  """Per-token averages of summed metrics. Families whose loss is a likelihood bound report it
  as `nelbo` (then also bits per token and perplexity); the others as `loss`, with their terms
  (`ce`, `mse`, ...) beside it."""
  tokens = jnp.maximum(metrics["tokens"], 1)
  out = {k: v / tokens for k, v in metrics.items()
         if k not in ("tokens", "masked", "nelbo", "loss", "norm")}
  if "nelbo" in metrics:
    nats = metrics["nelbo"] / tokens
    out.update(loss=nats, bits_per_token=nats / LN2, perplexity=jnp.exp(nats))
  else:
    out["loss"] = metrics["loss"] / tokens
  out["tokens"] = metrics["tokens"]
  return out


def make_train_step(graphdef, tx, lr_schedule, train_cfg, shardings: TrainState,
                    batch_sharding: NamedSharding, frozen=None, accum: int | None = None):
  """`frozen`: a pytree of bools over the parameters; those get no gradient (their weight
  gradients are never computed) and no update (the optimizer's `set_to_zero`). `accum`:
  micro-batches per step, default `train.grad_accum` (its automatic choice, 0, is made by
  dlm/train/micro_batches.py; here 0 is one micro-batch)."""
  accum = max(1, train_cfg.grad_accum if accum is None else accum)
  ema_decay = train_cfg.ema_decay
  replicated = NamedSharding(batch_sharding.mesh, PartitionSpec())

  def loss_fn(params, micro, rng):
    if frozen is not None:
      params = jax.tree.map(lambda p, f: jax.lax.stop_gradient(p) if f else p, params, frozen)
    model = nnx.merge(graphdef, params)
    return model.loss(micro, rng=rng, train=True)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def train_step(state: TrainState, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    rng_noise, rng_net = jax.random.split(rng)
    noisy = nnx.merge(graphdef, state.params).corrupt(batch, rng_noise)
    if accum == 1:
      (_, metrics), grads = grad_fn(state.params, noisy, rng_net)
    else:
      micro = jax.tree.map(lambda x: _split_micro(x, accum), noisy)

      def body(carry, inp):
        g_acc, m_acc = carry
        mb, i = inp
        (_, m), g = grad_fn(state.params, mb, jax.random.fold_in(rng_net, i))
        return (jax.tree.map(jnp.add, g_acc, g), jax.tree.map(jnp.add, m_acc, m)), None

      zeros_g = jax.tree.map(jnp.zeros_like, state.params)
      first = jax.tree.map(lambda x: x[0], micro)
      zeros_m = jax.tree.map(jnp.zeros_like, jax.eval_shape(
          lambda: loss_fn(state.params, first, rng_net)[1]))
      (grads, metrics), _ = jax.lax.scan(body, (zeros_g, zeros_m), (micro, jnp.arange(accum)))
    tokens = jnp.maximum(metrics["tokens"], 1).astype(jnp.float32)
    # The objective's denominator: scored tokens, or the family's own `norm` (rows, for
    # LLaDA's per-response normalisation), summed over micro-batches like the loss.
    norm = jnp.maximum(metrics.get("norm", metrics["tokens"]), 1).astype(jnp.float32)
    grads = jax.tree.map(lambda g: g / norm, grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    decay = jnp.minimum(ema_decay, (1.0 + state.step) / (10.0 + state.step))
    ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema, params)
    if frozen is not None:  # a frozen parameter's average is itself, bit for bit
      ema = jax.tree.map(lambda e, p, f: p if f else e, ema, params, frozen)
    out = summarize(metrics)
    grad_norm = optax.tree.norm(grads)
    # A non-finite loss, gradient or update is skipped: the state stays as it was (the step
    # counter still advances with the data), and the loop counts it (train.max_nonfinite_steps).
    finite = jnp.isfinite(out["loss"]) & _all_finite(grads) & _all_finite(updates)
    params, opt_state, ema = jax.tree.map(lambda n, o: jnp.where(finite, n, o),
                                          (params, opt_state, ema),
                                          (state.params, state.opt_state, state.ema))
    out.update(grad_norm=grad_norm, lr=lr_schedule(state.step),
               masked_fraction=metrics.get("masked", 0) / tokens,
               skipped=(~finite).astype(jnp.int32))
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state, ema=ema,
                      rng=state.rng), out

  return jax.jit(train_step, in_shardings=(shardings, batch_sharding),
                 out_shardings=(shardings, replicated), donate_argnums=(0,))


def make_eval_step(graphdef, param_shardings, batch_sharding: NamedSharding):
  """(params, batch, rng) -> summed metrics; the same bound as training, without dropout."""
  replicated = NamedSharding(batch_sharding.mesh, PartitionSpec())

  def eval_step(params, batch, rng):
    model = nnx.merge(graphdef, params)
    rng_noise, rng_net = jax.random.split(rng)
    noisy = model.corrupt(batch, rng_noise)
    _, metrics = model.loss(noisy, rng=rng_net, train=False)
    return metrics

  return jax.jit(eval_step, in_shardings=(param_shardings, batch_sharding, replicated),
                 out_shardings=replicated)
