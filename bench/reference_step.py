"""A plain-JAX masked-diffusion training step, the yardstick of `train_throughput.py
--compare_reference`: no dlm code, the architecture of md4's text transformer (google-deepmind/md4
`md4/networks/transformer.py`: pre-norm RMSNorm blocks, rotary attention, SwiGLU, adaLN-zero
conditioning computed once per sequence) and MD4's continuous-time ELBO with the linear
schedule and antithetic times (`md4/models/diffusion/md4.py`), AdamW with global-norm clipping
and an EMA of the parameters (`md4/train.py`). It computes what dlm's masked step computes on
the same shape, written the way a researcher would write it in one file: parameters in a dict,
q/k/v and gate/up as separate matmuls, no sharding annotations, no checks. Where dlm's step does
more (its skip of non-finite updates, its metrics), that is the framework's cost the ratio
measures.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax


def init(rng, *, vocab: int, width: int, depth: int, heads: int, hidden: int,
         cond: int = 128) -> dict:
  """Parameters as dlm's backbone initialises them (normal, depth-scaled outputs, zero adaLN
  and head): the step's cost does not depend on the values."""
  keys = iter(jax.random.split(rng, 8 + 8 * depth))

  def normal(shape, std):
    return std * jax.random.normal(next(keys), shape, jnp.float32)

  blocks = [{
      "norm_attn": jnp.ones((width,)), "norm_mlp": jnp.ones((width,)),
      "wq": normal((width, width), width**-0.5), "wk": normal((width, width), width**-0.5),
      "wv": normal((width, width), width**-0.5),
      "wo": normal((width, width), width**-0.5 / math.sqrt(2 * depth)),
      "w_gate": normal((width, hidden), width**-0.5), "w_up": normal((width, hidden), width**-0.5),
      "w_down": normal((hidden, width), hidden**-0.5 / math.sqrt(2 * depth)),
      "ada": jnp.zeros((cond, 6 * width)),
  } for _ in range(depth)]
  return {"embed": normal((vocab, width), 0.02), "time_in": normal((256, cond), 0.02),
          "time_hidden": normal((cond, cond), 0.02), "blocks": blocks,
          "norm_out": jnp.ones((width,)), "ada_out": jnp.zeros((cond, 2 * width)),
          "unembed": jnp.zeros((width, vocab)), "unembed_bias": jnp.zeros((vocab,))}


def _rms(x, scale):
  return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + 1e-6) * scale


def _rotary(x, positions):
  half = x.shape[-1] // 2
  angles = positions[..., None].astype(jnp.float32) * 10_000.0 ** (-jnp.arange(half) / half)
  cos, sin = jnp.cos(angles)[:, :, None], jnp.sin(angles)[:, :, None]
  x1, x2 = x[..., :half], x[..., half:]
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def forward(params, tokens, t, heads: int):
  """Logits (batch, length, vocab) of tokens at one time per sequence t (batch,)."""
  batch, length = tokens.shape
  positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
  half = 128
  freqs = jnp.exp(-math.log(10_000.0) * jnp.arange(half) / half)
  angles = 1000.0 * t[:, None] * freqs
  c = jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1) @ params["time_in"]
  c = jax.nn.silu(jax.nn.silu(c) @ params["time_hidden"])  # (batch, cond)
  x = params["embed"][tokens]
  for p in params["blocks"]:
    mod = (c @ p["ada"])[:, None, :]  # (batch, 1, 6 width): once per sequence
    shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = jnp.split(mod, 6, axis=-1)
    h = _rms(x, p["norm_attn"]) * (1 + scale_a) + shift_a
    q, k, v = (jnp.reshape(h @ p[w], (batch, length, heads, -1)) for w in ("wq", "wk", "wv"))
    o = jax.nn.dot_product_attention(_rotary(q, positions), _rotary(k, positions), v)
    x = x + gate_a * (o.reshape(batch, length, -1) @ p["wo"])
    h = _rms(x, p["norm_mlp"]) * (1 + scale_m) + shift_m
    x = x + gate_m * ((jax.nn.silu(h @ p["w_gate"]) * (h @ p["w_up"])) @ p["w_down"])
  shift, scale = jnp.split((c @ params["ada_out"])[:, None, :], 2, axis=-1)
  h = _rms(x, params["norm_out"]) * (1 + scale) + shift
  return h @ params["unembed"] + params["unembed_bias"]


def loss(params, tokens, rng, *, heads: int, mask_id: int, eps: float = 1e-4):
  """MD4's continuous-time NELBO per token, linear schedule alpha(t) = 1 - t (clipped by eps),
  antithetic times over the batch."""
  batch = tokens.shape[0]
  rng_t, rng_mask = jax.random.split(rng)
  t = (jax.random.uniform(rng_t) + jnp.arange(batch) / batch) % 1.0
  alpha = (1.0 - 2 * eps) * (1.0 - t) + eps
  masked = jax.random.uniform(rng_mask, tokens.shape) > alpha[:, None]
  z = jnp.where(masked, mask_id, tokens)
  logits = forward(params, z, t, heads)
  logits = logits.at[..., mask_id].set(-jnp.inf)
  log_p = jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[..., None], axis=-1)[..., 0]
  weight = (1.0 - 2 * eps) / (1.0 - alpha)  # -alpha'(t) / (1 - alpha(t))
  return -(weight[:, None] * jnp.where(masked, log_p, 0.0)).sum() / tokens.size


def make_step(tx: optax.GradientTransformation, *, heads: int, mask_id: int,
              ema_decay: float = 0.9999):
  """(params, opt_state, ema, tokens, rng) -> (params, opt_state, ema, loss), jitted with the
  state donated."""

  def step(params, opt_state, ema, tokens, rng):
    value, grads = jax.value_and_grad(loss)(params, tokens, rng, heads=heads, mask_id=mask_id)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    ema = jax.tree.map(lambda e, p: ema_decay * e + (1 - ema_decay) * p, ema, params)
    return params, opt_state, ema, value

  return jax.jit(step, donate_argnums=(0, 1, 2))


def optimizer(lr: float = 3e-4) -> optax.GradientTransformation:
  """md4's: AdamW (b2 0.999, weight decay on matrices), clipped at global norm 1."""
  return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(
      lr, b2=0.999, weight_decay=0.01, mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p)))
