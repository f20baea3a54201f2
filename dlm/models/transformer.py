"""The shared backbone: a pre-norm transformer with RMSNorm, rotary positions and SwiGLU.

Optional adaLN-zero conditioning (DiT, Peebles and Xie 2023) on a per-token time t of shape
(batch, length); `time_conditioning="none"` drops time (MD4 shows masked models need not see
it). Attention is `jax.nn.dot_product_attention` (XLA, or cuDNN flash attention on GPU) with
bidirectional, causal or block-causal masks kept within segments, or an explicit mask
(the any-order family's two streams). Layers can be scanned
(`nnx.scan`, one compiled layer) and rematerialised by policy; parameters are float32 and
matmuls run in `dtype` (float32 or bfloat16).

Low-rank adapters (LoRA, Hu et al. 2021; `lora_rank > 0`): every block's dense weight W (qkv,
attention out, MLP in and down) gets a pair A (its input dims x r, random) and B (r x its
output dims, zeros), and is used as W + (lora_alpha / lora_rank) A B. B starts at zero, so an
adapted model computes exactly what its base does until the adapters train; with rank 0 there
are no adapter parameters at all.

The outputs have fixed types: `__call__` gives logits (or `out_features` vectors),
`features` the hidden states the output head reads, `trunk` the states before the final time
modulation with the conditioning (what a family's own extra head reads: CCDD's), `head` the
output projection. Family-specific heads live in the family's module, not here.
"""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from dlm import config as config_lib
from dlm import sharding
from dlm.models.family import layout
from dlm.models.layers import (RMSNorm, attention_mask, constrain, dropout, param, rotary,
                               timestep_features)

REMAT_POLICIES = dict(zip(config_lib.REMATS, (
    None,
    jax.checkpoint_policies.nothing_saveable,
    jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    jax.checkpoint_policies.checkpoint_dots,
)))


@dataclasses.dataclass(frozen=True, kw_only=True)
class TransformerConfig(config_lib.Backbone):
  """The backbone keys of the `model` section (`config.Backbone`: defaults and checks) and what
  the family sets itself."""
  vocab_size: int
  rules: tuple = ()  # logical-axis rules for activation sharding constraints
  token_inputs: bool = True  # False: the caller passes input vectors (continuous families)
  out_features: int = 0  # output head width; 0 = vocab_size (logits)

  @property
  def head_dim(self) -> int:
    return self.width // self.heads

  @property
  def mlp_dim(self) -> int:
    return int(self.mlp_ratio * self.width)

  @property
  def conditioned(self) -> bool:
    return self.time_conditioning == "adaln_zero"


def from_config(config, vocab_size: int, **overrides) -> TransformerConfig:
  """The backbone of a run's `model` section for a vocabulary (the one place the section's
  keys become a TransformerConfig); `overrides` set a family's own fields."""
  backbone = config_lib.options(config_lib.Backbone, config.model)
  fields = dict(dataclasses.asdict(backbone), vocab_size=vocab_size,
                rules=sharding.normalize_rules(config.mesh.rules))
  fields.update(overrides)
  return TransformerConfig(**fields)


def _init(std: float):
  return nnx.initializers.normal(std)


class _Adapted(nnx.Module):
  """A module whose dense weights may carry low-rank adapters `lora_a_<name>`, `lora_b_<name>`."""

  def _add_lora(self, cfg: TransformerConfig, rngs: nnx.Rngs, name: str, in_shape, in_names,
                out_shape, out_names) -> None:
    if not cfg.lora_rank:
      return
    r = cfg.lora_rank
    fan_in = 1
    for n in in_shape:
      fan_in *= n
    setattr(self, f"lora_a_{name}", param(rngs, _init(fan_in**-0.5), (*in_shape, r),
                                          (*in_names, None)))
    setattr(self, f"lora_b_{name}", param(rngs, nnx.initializers.zeros, (r, *out_shape),
                                          (None, *out_names)))

  def _weight(self, name: str, dt) -> jax.Array:
    """W, or W + (alpha / r) A B with adapters, in the compute dtype."""
    w = getattr(self, name)[...]
    if self.cfg.lora_rank:
      a, b = getattr(self, f"lora_a_{name}")[...], getattr(self, f"lora_b_{name}")[...]
      w = w + (self.cfg.lora_alpha / self.cfg.lora_rank) * jnp.tensordot(a, b, axes=1)
    return w.astype(dt)


class Attention(_Adapted):

  def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs):
    d, h, k = cfg.width, cfg.heads, cfg.head_dim
    self.cfg = cfg
    # q, k and v in one matmul (one read of x, one weight gradient).
    self.wqkv = param(rngs, _init(d**-0.5), (d, 3, h, k), ("embed", None, "heads", "kv"))
    out_std = (h * k) ** -0.5 / (2 * cfg.depth) ** 0.5
    self.wo = param(rngs, _init(out_std), (h, k, d), ("heads", "kv", "embed"))
    self._add_lora(cfg, rngs, "wqkv", (d,), ("embed",), (3, h, k), (None, "heads", "kv"))
    self._add_lora(cfg, rngs, "wo", (h, k), ("heads", "kv"), (d,), ("embed",))

  def __call__(self, x, mask, positions):
    cfg, dt = self.cfg, jnp.dtype(self.cfg.dtype)
    names = ("batch", "length", "heads", "kv")
    qkv = jnp.einsum("bld,dthk->blthk", x, self._weight("wqkv", dt))
    q, k, v = (constrain(qkv[:, :, i], names, cfg.rules) for i in range(3))
    q, k = rotary(q, positions, cfg.rope_theta), rotary(k, positions, cfg.rope_theta)
    impl = None if cfg.attention_impl == "auto" else cfg.attention_impl
    o = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=impl)
    return jnp.einsum("blhk,hkd->bld", o, self._weight("wo", dt))


class SwiGLU(_Adapted):

  def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs):
    d, m = cfg.width, cfg.mlp_dim
    self.cfg = cfg
    self.w_in = param(rngs, _init(d**-0.5), (d, 2, m), ("embed", None, "mlp"))  # gate, up
    self.w_down = param(rngs, _init(m**-0.5 / (2 * cfg.depth) ** 0.5), (m, d), ("mlp", "embed"))
    self._add_lora(cfg, rngs, "w_in", (d,), ("embed",), (2, m), (None, "mlp"))
    self._add_lora(cfg, rngs, "w_down", (m,), ("mlp",), (d,), ("embed",))

  def __call__(self, x):
    dt = jnp.dtype(self.cfg.dtype)
    gate_up = jnp.einsum("bld,dtm->bltm", x, self._weight("w_in", dt))
    gate, up = gate_up[:, :, 0], gate_up[:, :, 1]
    h = constrain(jax.nn.silu(gate) * up, ("batch", "length", "mlp"), self.cfg.rules)
    return h @ self._weight("w_down", dt)


class Block(nnx.Module):
  """Pre-norm block; with adaLN-zero, shift/scale/gate of both branches come from c."""

  def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.norm_attn = RMSNorm(cfg.width, rngs)
    self.attn = Attention(cfg, rngs)
    self.norm_mlp = RMSNorm(cfg.width, rngs)
    self.mlp = SwiGLU(cfg, rngs)
    if cfg.conditioned:  # zero init: every block starts as the identity (adaLN-zero)
      self.modulation = param(rngs, nnx.initializers.zeros, (cfg.cond_width, 6, cfg.width),
                              ("cond", None, "embed"))

  def __call__(self, x, c, mask, positions, rng):
    cfg = self.cfg
    dt = jnp.dtype(cfg.dtype)
    if cfg.conditioned:
      mod = jnp.einsum("blc,cnd->blnd", jax.nn.silu(c), self.modulation[...].astype(dt))
      shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = (mod[:, :, i] for i in range(6))
    rngs = (None, None) if rng is None else tuple(jax.random.split(rng))
    h = self.norm_attn(x)
    if cfg.conditioned:
      h = h * (1 + scale_a) + shift_a
    h = dropout(self.attn(h, mask, positions), cfg.dropout, rngs[0])
    x = x + (gate_a * h if cfg.conditioned else h)
    h = self.norm_mlp(x)
    if cfg.conditioned:
      h = h * (1 + scale_m) + shift_m
    h = dropout(self.mlp(h), cfg.dropout, rngs[1])
    x = x + (gate_m * h if cfg.conditioned else h)
    return constrain(x, ("batch", "length", "embed"), cfg.rules)


class Transformer(nnx.Module):
  """tokens (batch, length) [+ time (batch, length)] -> logits (batch, length, vocab), float32."""

  def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    d = cfg.width
    if cfg.token_inputs:
      self.embed = param(rngs, _init(0.02), (cfg.vocab_size, d), ("vocab", "embed"))
    elif cfg.tie_embeddings:
      raise ValueError("tie_embeddings needs token inputs")
    if cfg.conditioned:
      self.time_in = param(rngs, _init(0.02), (256, cfg.cond_width), ("freq", "cond"))
      self.time_hidden = param(rngs, _init(0.02), (cfg.cond_width, cfg.cond_width),
                               ("cond_in", "cond"))
      self.final_modulation = param(rngs, nnx.initializers.zeros, (cfg.cond_width, 2, d),
                                    ("cond", None, "embed"))
    if cfg.scan_layers:
      @nnx.split_rngs(splits=cfg.depth)
      @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
      def make_blocks(rngs):
        return Block(cfg, rngs)

      self.blocks = make_blocks(rngs)
    else:
      self.blocks = nnx.List([Block(cfg, rngs) for _ in range(cfg.depth)])
    self.norm_out = RMSNorm(d, rngs)
    if not cfg.tie_embeddings:
      head_init = _init(cfg.head_init_std) if cfg.head_init_std else nnx.initializers.zeros
      out_axis = None if cfg.out_features else "vocab"
      self.unembed = param(rngs, head_init, (d, self.out_features), ("embed", out_axis))
      self.unembed_bias = param(rngs, nnx.initializers.zeros, (self.out_features,), (out_axis,))
    else:
      self.unembed_bias = param(rngs, nnx.initializers.zeros, (cfg.vocab_size,), ("vocab",))

  @property
  def out_features(self) -> int:
    return self.cfg.out_features or self.cfg.vocab_size

  def time_embedding(self, t: jax.Array) -> jax.Array:
    dt = jnp.dtype(self.cfg.dtype)
    h = timestep_features(t, 256).astype(dt) @ self.time_in[...].astype(dt)
    return jax.nn.silu(h) @ self.time_hidden[...].astype(dt)

  def __call__(self, tokens, t=None, segment_ids=None, positions=None, *, rng=None, cond=None,
               mask=None) -> jax.Array:
    """Logits (batch, length, out_features), float32: `head(features(...))`.

    `tokens` are ids (batch, length), or with `token_inputs=False` input vectors
    (batch, length, width). `t` is the per-token time (batch, length) of a time-conditioned
    backbone. `cond` (batch, length, cond_width) is added to the time embedding. `mask`: an
    explicit boolean attention mask (batch, 1, length, length), True where query i may attend
    to key j, used instead of `cfg.attention` and the segments (the any-order family's
    two-stream mask); every row must allow some key."""
    return self.head(self.features(tokens, t, segment_ids, positions, rng=rng, cond=cond,
                                   mask=mask))

  def features(self, tokens, t=None, segment_ids=None, positions=None, *, rng=None, cond=None,
               mask=None) -> jax.Array:
    """The last hidden states (batch, length, width) that `head` reads: the trunk's, with the
    final time modulation where the backbone is time-conditioned."""
    return self.modulate(*self.trunk(tokens, t, segment_ids, positions, rng=rng, cond=cond,
                                     mask=mask))

  def modulate(self, h, c):
    """The final adaLN modulation of trunk states `h` by the conditioning `c` (none if None)."""
    if c is None:
      return h
    dt = jnp.dtype(self.cfg.dtype)
    mod = jnp.einsum("blc,cnd->blnd", jax.nn.silu(c), self.final_modulation[...].astype(dt))
    return h * (1 + mod[:, :, 1]) + mod[:, :, 0]

  def trunk(self, tokens, t=None, segment_ids=None, positions=None, *, rng=None, cond=None,
            mask=None) -> tuple[jax.Array, jax.Array | None]:
    """(hidden states after the blocks and the final norm (batch, length, width), the
    conditioning c (batch, length, cond_width), or None without time): what a family's own
    output head reads (CCDD's representation head)."""
    cfg = self.cfg
    dt = jnp.dtype(cfg.dtype)
    chex.assert_rank(tokens, 2 if cfg.token_inputs else 3)
    batch, length = tokens.shape[:2]
    segment_ids, positions = layout((batch, length), segment_ids, positions)
    chex.assert_equal_shape((tokens[..., 0] if tokens.ndim == 3 else tokens, segment_ids,
                             positions))
    if cfg.token_inputs:
      # FSDP: gather the table's embed dimension before the lookup (vocab stays split).
      table = constrain(self.embed[...], ("vocab", None), cfg.rules)
      x = jnp.take(table, tokens, axis=0).astype(dt)
    else:
      chex.assert_shape(tokens, (batch, length, cfg.width))
      x = tokens.astype(dt)
    x = constrain(x, ("batch", "length", "embed"), cfg.rules)
    c = None
    if cfg.conditioned:
      if t is None:
        raise ValueError("this backbone is time-conditioned: pass t of shape (batch, length)")
      chex.assert_shape(t, (batch, length))
      c = self.time_embedding(t)
      if cond is not None:
        chex.assert_shape(cond, (batch, length, cfg.cond_width))
        c = c + cond.astype(c.dtype)
    if mask is None:
      mask = attention_mask(segment_ids, cfg.attention, cfg.block_size)
    else:
      chex.assert_shape(mask, (batch, 1, length, length))
      chex.assert_type(mask, bool)
    layer_rngs = None if rng is None or cfg.dropout <= 0 else jax.random.split(rng, cfg.depth)

    def run_block(block, x, c, mask, positions, rng):
      return block(x, c, mask, positions, rng)

    policy = REMAT_POLICIES[cfg.remat]
    if cfg.remat != "none":
      run_block = nnx.remat(run_block, policy=policy, prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
      @nnx.scan(in_axes=(0, nnx.Carry, None, None, None, 0 if layer_rngs is not None else None),
                out_axes=nnx.Carry)
      def scan_blocks(block, x, c, mask, positions, rng):
        return run_block(block, x, c, mask, positions, rng)

      x = scan_blocks(self.blocks, x, c, mask, positions, layer_rngs)
    else:
      for i, block in enumerate(self.blocks):
        x = run_block(block, x, c, mask, positions,
                      None if layer_rngs is None else layer_rngs[i])
    return self.norm_out(x), c

  def head(self, h):
    """The output head on hidden states (batch, length, width) -> float32 logits."""
    cfg = self.cfg
    dt = jnp.dtype(cfg.dtype)
    if cfg.tie_embeddings:
      unembed = self.embed[...].T * (cfg.width**-0.5 / 0.02)  # unit-scale logits at init
    else:
      unembed = self.unembed[...]
    logits = (h @ unembed.astype(dt)).astype(jnp.float32) + self.unembed_bias[...]
    logits = constrain(logits, ("batch", "length", None if cfg.out_features else "vocab"),
                       cfg.rules)
    return logits
