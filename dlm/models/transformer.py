"""The shared backbone: a pre-norm transformer, by default with RMSNorm, rotary positions and
SwiGLU, and the options released models need (`config.Backbone`): grouped-query attention and
q/k/v biases (Qwen2, Dream), LayerNorm, a GELU MLP with biases and learned positions (GPT-2),
MDLM's DiT block (LayerNorm without bias, adaLN with biases on sigma), untied heads without a
bias, the rotary layout, Dream's shifted logits and bfloat16 parameter storage.

Optional adaLN-zero conditioning (DiT, Peebles and Xie 2023) on a per-token time t of shape
(batch, length), or on its distinct values per row (`layers.TimeLevels`): the conditioning and
every block's modulation are then computed once per value, not once per token (md4 conditions
once per sequence; the same numbers at a fraction of the work: the per-token modulation was
a fifth of the training step's FLOPs at width 256). `time_conditioning="none"` drops time (MD4
shows masked models need not see it). Attention is `jax.nn.dot_product_attention` (XLA, or
cuDNN flash attention on GPU: `attention`) with bidirectional, causal or block-causal masks
kept within segments, or an explicit mask (the any-order family's two streams). Layers can be
scanned (`nnx.scan`, one compiled layer) and rematerialised by policy; parameters are stored in
`param_dtype` (float32 unless a converted model is kept in bfloat16) and matmuls run in `dtype`
(float32 or bfloat16); norms and softmax statistics are float32.

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
from dlm.errors import DlmError
from dlm.models.family import layout
from dlm.models.layers import (LayerNorm, RMSNorm, TimeLevels, attention_mask, constrain,
                               dropout, param, rotary, timestep_features)

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
  sigma_eps: float = 1e-3  # time_input='sigma_loglinear': the schedule's eps (diffusion.eps)

  @property
  def head_dim(self) -> int:
    return self.width // self.heads

  @property
  def hidden_dim(self) -> int:
    """The MLP's hidden width."""
    return self.mlp_dim or int(self.mlp_ratio * self.width)

  @property
  def kv_groups(self) -> int:
    """Key/value heads (grouped-query attention when fewer than `heads`)."""
    return self.kv_heads or self.heads

  @property
  def dtypes(self) -> tuple:
    """(parameter storage dtype, compute dtype)."""
    return jnp.dtype(self.param_dtype), jnp.dtype(self.dtype)

  @property
  def conditioned(self) -> bool:
    return self.time_conditioning == "adaln_zero"


def vocab_size(config, tokenizer) -> int:
  """The embedding rows of a run: `model.vocab_size`, or the tokenizer's when 0. A converted
  model may have more rows than its tokenizer has tokens (LLaDA: 126464 for 126349), never
  fewer."""
  rows = config.model.get("vocab_size", 0)
  if rows and rows < tokenizer.vocab_size:
    raise DlmError(f"model.vocab_size={rows} is smaller than the tokenizer's "
                   f"{tokenizer.vocab_size} tokens")
  return rows or tokenizer.vocab_size


def from_config(config, vocab_size: int, **overrides) -> TransformerConfig:
  """The backbone of a run's `model` section for a vocabulary (the one place the section's
  keys become a TransformerConfig); `overrides` set a family's own fields."""
  backbone = config_lib.options(config_lib.Backbone, config.model)
  fields = dict(dataclasses.asdict(backbone), vocab_size=vocab_size,
                rules=sharding.normalize_rules(config.mesh.rules))
  if "diffusion" in config and "eps" in config.diffusion:
    fields["sigma_eps"] = config.diffusion.eps
  fields.update(overrides)
  return TransformerConfig(**fields)


def for_tokenizer(config, tokenizer, **overrides) -> TransformerConfig:
  """`from_config` for the run's embedding rows (`vocab_size`)."""
  return from_config(config, vocab_size(config, tokenizer), **overrides)


def _norm(cfg: TransformerConfig, rngs: nnx.Rngs, width: int | None = None):
  width = width or cfg.width
  if cfg.norm == "layer":
    return LayerNorm(width, rngs, cfg.norm_eps, cfg.norm_bias, cfg.dtypes[0])
  return RMSNorm(width, rngs, cfg.norm_eps, cfg.dtypes[0])


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

  def _dense(self, cfg: TransformerConfig, rngs: nnx.Rngs, name: str, std: float, in_shape,
             in_names, out_shape, out_names, bias: bool = False) -> None:
    """Weight `name` (in_shape + out_shape), its adapters, and a zero bias `b<name[1:]>`."""
    setattr(self, name, param(rngs, _init(std), (*in_shape, *out_shape),
                              (*in_names, *out_names), cfg.dtypes[0]))
    if bias:
      setattr(self, "b" + name[1:], param(rngs, nnx.initializers.zeros, tuple(out_shape),
                                          tuple(out_names), cfg.dtypes[0]))
    self._add_lora(cfg, rngs, name, in_shape, in_names, out_shape, out_names)

  def _weight(self, name: str, dt) -> jax.Array:
    """W, or W + (alpha / r) A B with adapters, in the compute dtype."""
    w = getattr(self, name)[...]
    if self.cfg.lora_rank:
      a, b = getattr(self, f"lora_a_{name}")[...], getattr(self, f"lora_b_{name}")[...]
      w = w + (self.cfg.lora_alpha / self.cfg.lora_rank) * jnp.tensordot(
          a.astype(w.dtype), b.astype(w.dtype), axes=1)
    return w.astype(dt)

  def _bias(self, name: str, y: jax.Array) -> jax.Array:
    """y plus the bias of weight `name`, if it has one."""
    b = getattr(self, "b" + name[1:], None)
    return y if b is None else y + b[...].astype(y.dtype)


def attention(q, k, v, mask, impl: str) -> jax.Array:
  """`jax.nn.dot_product_attention` by `model.attention_impl`: 'xla', 'cudnn' (flash
  attention; fails where cuDNN cannot run it), or 'auto' (the default): cuDNN on a GPU for
  16-bit inputs where it accepts the call, else XLA. (JAX's own `implementation=None` is XLA
  everywhere as of 0.10.) Refusals happen at trace time, so the fallback costs nothing."""
  if impl == "auto":
    if jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16):
      try:
        return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="cudnn")
      except (ValueError, NotImplementedError, RuntimeError):  # shapes or masks it refuses
        pass
    impl = "xla"
  return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=impl)


class Attention(_Adapted):
  """Multi-head attention; with `kv_heads < heads` grouped-query attention (Ainslie et al.
  2023): q, k and v then come from separate projections `wq`, `wkv`."""

  def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs):
    d, h, k, g = cfg.width, cfg.heads, cfg.head_dim, cfg.kv_groups
    self.cfg = cfg
    if g == h:  # q, k and v in one matmul (one read of x, one weight gradient)
      self._dense(cfg, rngs, "wqkv", d**-0.5, (d,), ("embed",), (3, h, k),
                  (None, "heads", "kv"), cfg.qkv_bias)
    else:
      self._dense(cfg, rngs, "wq", d**-0.5, (d,), ("embed",), (h, k), ("heads", "kv"),
                  cfg.qkv_bias)
      self._dense(cfg, rngs, "wkv", d**-0.5, (d,), ("embed",), (2, g, k),
                  (None, "heads", "kv"), cfg.qkv_bias)
    out_std = (h * k) ** -0.5 / (2 * cfg.depth) ** 0.5
    self._dense(cfg, rngs, "wo", out_std, (h, k), ("heads", "kv"), (d,), ("embed",),
                cfg.attn_out_bias)

  def _qkv(self, x, positions):
    """Queries (batch, length, heads, k), keys and values (batch, length, kv_heads, k), the
    rotary positions applied."""
    cfg, dt = self.cfg, jnp.dtype(self.cfg.dtype)
    names = ("batch", "length", "heads", "kv")
    if cfg.kv_groups == cfg.heads:
      qkv = self._bias("wqkv", jnp.einsum("bld,dthk->blthk", x, self._weight("wqkv", dt)))
      q, k, v = (qkv[:, :, i] for i in range(3))
    else:
      q = self._bias("wq", jnp.einsum("bld,dhk->blhk", x, self._weight("wq", dt)))
      kv = self._bias("wkv", jnp.einsum("bld,dthk->blthk", x, self._weight("wkv", dt)))
      k, v = kv[:, :, 0], kv[:, :, 1]
    q, k, v = (constrain(a, names, cfg.rules) for a in (q, k, v))
    if cfg.positions == "rotary":
      q = rotary(q, positions, cfg.rope_theta, cfg.rope_layout)
      k = rotary(k, positions, cfg.rope_theta, cfg.rope_layout)
    return q, k, v

  def _attend(self, q, k, v, mask):
    o = attention(q, k, v, mask, self.cfg.attention_impl)
    return self._bias("wo", jnp.einsum("blhk,hkd->bld", o,
                                       self._weight("wo", jnp.dtype(self.cfg.dtype))))

  def __call__(self, x, mask, positions):
    return self._attend(*self._qkv(x, positions), mask)

  def cached(self, x, positions, cache, mask):
    """Attention of a window of positions against a key/value cache of the whole canvas: x
    (batch, s, width) at canvas `positions` (batch, s), whose keys and values replace the
    cache's = (keys, values), each (batch, length, kv_heads, k), at those positions (positions
    past the canvas are dropped); `mask` (batch, 1, s, length) says which canvas keys each
    query sees. Returns (output, the updated cache)."""
    q, k, v = self._qkv(x, positions)
    rows = jnp.arange(x.shape[0])[:, None]
    names = ("batch", "length", "heads", "kv")  # sharded as the activations' keys and values
    keys, values = (constrain(c.at[rows, positions].set(a.astype(c.dtype), mode="drop"), names,
                              self.cfg.rules) for c, a in zip(cache, (k, v)))
    return self._attend(q, keys, values, mask), (keys, values)


class SwiGLU(_Adapted):
  """silu(x W_gate) * (x W_up), then W_down (Shazeer 2020); no biases."""

  def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs):
    d, m = cfg.width, cfg.hidden_dim
    self.cfg = cfg
    self._dense(cfg, rngs, "w_in", d**-0.5, (d,), ("embed",), (2, m), (None, "mlp"))  # gate, up
    self._dense(cfg, rngs, "w_down", m**-0.5 / (2 * cfg.depth) ** 0.5, (m,), ("mlp",), (d,),
                ("embed",))

  def __call__(self, x):
    dt = jnp.dtype(self.cfg.dtype)
    gate_up = jnp.einsum("bld,dtm->bltm", x, self._weight("w_in", dt))
    gate, up = gate_up[:, :, 0], gate_up[:, :, 1]
    h = constrain(jax.nn.silu(gate) * up, ("batch", "length", "mlp"), self.cfg.rules)
    return h @ self._weight("w_down", dt)


class GeluMLP(_Adapted):
  """gelu(x W_in + b_in) W_down + b_down with the tanh approximation (GPT-2, MDLM's DiT)."""

  def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs):
    d, m = cfg.width, cfg.hidden_dim
    self.cfg = cfg
    self._dense(cfg, rngs, "w_in", d**-0.5, (d,), ("embed",), (m,), ("mlp",), cfg.mlp_bias)
    self._dense(cfg, rngs, "w_down", m**-0.5 / (2 * cfg.depth) ** 0.5, (m,), ("mlp",), (d,),
                ("embed",), cfg.mlp_bias)

  def __call__(self, x):
    dt = jnp.dtype(self.cfg.dtype)
    h = jax.nn.gelu(self._bias("w_in", x @ self._weight("w_in", dt)), approximate=True)
    h = constrain(h, ("batch", "length", "mlp"), self.cfg.rules)
    return self._bias("w_down", h @ self._weight("w_down", dt))


class Block(nnx.Module):
  """Pre-norm block; with adaLN-zero, shift/scale/gate of both branches come from c."""

  def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.norm_attn = _norm(cfg, rngs)
    self.attn = Attention(cfg, rngs)
    self.norm_mlp = _norm(cfg, rngs)
    self.mlp = GeluMLP(cfg, rngs) if cfg.mlp == "gelu" else SwiGLU(cfg, rngs)
    if cfg.conditioned:  # zero init: every block starts as the identity (adaLN-zero)
      self.modulation = param(rngs, nnx.initializers.zeros, (cfg.cond_width, 6, cfg.width),
                              ("cond", None, "embed"), cfg.dtypes[0])
      if cfg.time_bias:
        self.modulation_bias = param(rngs, nnx.initializers.zeros, (6, cfg.width),
                                     (None, "embed"), cfg.dtypes[0])

  def __call__(self, x, c, mask, positions, rng):
    rngs = (None, None) if rng is None else tuple(jax.random.split(rng))
    return self._residual(x, c, lambda h: (self.attn(h, mask, positions), None), rngs)[0]

  def cached(self, x, c, positions, cache, mask):
    """The block on a window of positions with the attention's key/value cache
    (`Attention.cached`, no dropout): (output, the updated cache)."""
    return self._residual(x, c, lambda h: self.attn.cached(h, positions, cache, mask))

  def _residual(self, x, c, attend, rngs=(None, None)):
    """Both residual branches; `attend(h) -> (attention output, extra)`; returns (x, extra)."""
    cfg = self.cfg
    if cfg.conditioned:
      shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = _modulation(
          c, self.modulation, getattr(self, "modulation_bias", None), cfg.dtype)
    h = self.norm_attn(x)
    if cfg.conditioned:
      h = h * (1 + scale_a) + shift_a
    h, extra = attend(h)
    h = dropout(h, cfg.dropout, rngs[0])
    x = x + (gate_a * h if cfg.conditioned else h)
    h = self.norm_mlp(x)
    if cfg.conditioned:
      h = h * (1 + scale_m) + shift_m
    h = dropout(self.mlp(h), cfg.dropout, rngs[1])
    x = x + (gate_m * h if cfg.conditioned else h)
    return constrain(x, ("batch", "length", "embed"), cfg.rules), extra


def _modulation(c, weight, bias, dtype) -> tuple[jax.Array, ...]:
  """adaLN's shift, scale and gate vectors from the conditioning: silu(c) W (+ b), split.
  `c` is per token (batch, length, cond_width), or `TimeLevels` of per-value conditionings
  (batch, K, cond_width): the vectors are then computed per value and spread to the tokens
  (batch, length or 1, width)."""
  dt = jnp.dtype(dtype)
  per_value = c.values if isinstance(c, TimeLevels) else c
  mod = jnp.einsum("blc,cnd->blnd", jax.nn.silu(per_value), weight[...].astype(dt))
  if bias is not None:
    mod = mod + bias[...].astype(dt)
  chunks = tuple(mod[:, :, i] for i in range(mod.shape[2]))
  return tuple(c.spread(m) for m in chunks) if isinstance(c, TimeLevels) else chunks


class Transformer(nnx.Module):
  """tokens (batch, length) [+ time (batch, length)] -> logits (batch, length, vocab), float32."""

  def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    d, pdt = cfg.width, cfg.dtypes[0]
    if cfg.token_inputs:
      self.embed = param(rngs, _init(0.02), (cfg.vocab_size, d), ("vocab", "embed"), pdt)
    elif cfg.tie_embeddings:
      raise ValueError("tie_embeddings needs token inputs")
    if cfg.positions == "learned":
      self.pos_embed = param(rngs, _init(0.01), (cfg.max_positions, d), (None, "embed"), pdt)
    if cfg.conditioned:
      self.time_in = param(rngs, _init(0.02), (256, cfg.cond_width), ("freq", "cond"), pdt)
      self.time_hidden = param(rngs, _init(0.02), (cfg.cond_width, cfg.cond_width),
                               ("cond_in", "cond"), pdt)
      self.final_modulation = param(rngs, nnx.initializers.zeros, (cfg.cond_width, 2, d),
                                    ("cond", None, "embed"), pdt)
      if cfg.time_bias:
        self.time_in_bias = param(rngs, nnx.initializers.zeros, (cfg.cond_width,), ("cond",),
                                  pdt)
        self.time_hidden_bias = param(rngs, nnx.initializers.zeros, (cfg.cond_width,),
                                      ("cond",), pdt)
        self.final_modulation_bias = param(rngs, nnx.initializers.zeros, (2, d),
                                           (None, "embed"), pdt)
    if cfg.scan_layers:
      @nnx.split_rngs(splits=cfg.depth)
      @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
      def make_blocks(rngs):
        return Block(cfg, rngs)

      self.blocks = make_blocks(rngs)
    else:
      self.blocks = nnx.List([Block(cfg, rngs) for _ in range(cfg.depth)])
    self.norm_out = _norm(cfg, rngs)
    out_axis = None if cfg.out_features else "vocab"
    if not cfg.tie_embeddings:
      head_init = _init(cfg.head_init_std) if cfg.head_init_std else nnx.initializers.zeros
      self.unembed = param(rngs, head_init, (d, self.out_features), ("embed", out_axis), pdt)
    if cfg.head_bias:
      self.unembed_bias = param(rngs, nnx.initializers.zeros, (self.out_features,),
                                (out_axis,), pdt)

  @property
  def out_features(self) -> int:
    return self.cfg.out_features or self.cfg.vocab_size

  def time_embedding(self, t: jax.Array) -> jax.Array:
    """The conditioning c (batch, n, cond_width) of times t (batch, n), read as
    `cfg.time_input` says: dlm's t (scaled by 1000, DiT's convention), MDLM's loglinear sigma
    (unscaled, as its `TimestepEmbedder` reads sigma), or zero (MDLM without time)."""
    cfg = self.cfg
    dt = jnp.dtype(cfg.dtype)
    if cfg.time_input == "t":
      features = timestep_features(t, 256)
    else:
      sigma = -jnp.log1p(-(1.0 - cfg.sigma_eps) * t.astype(jnp.float32))
      if cfg.time_input == "zero":
        sigma = jnp.zeros_like(sigma)
      features = timestep_features(sigma, 256, scale=1.0)
    h = features.astype(dt) @ self.time_in[...].astype(dt)
    if cfg.time_bias:
      h = h + self.time_in_bias[...].astype(dt)
    h = jax.nn.silu(h) @ self.time_hidden[...].astype(dt)
    if cfg.time_bias:
      h = h + self.time_hidden_bias[...].astype(dt)
    return h

  def __call__(self, tokens, t=None, segment_ids=None, positions=None, *, rng=None, cond=None,
               mask=None) -> jax.Array:
    """Logits (batch, length, out_features), float32: `head(features(...))`.

    `tokens` are ids (batch, length), or with `token_inputs=False` input vectors
    (batch, length, width). `t` is the per-token time (batch, length) of a time-conditioned
    backbone, or the same as `TimeLevels` (its distinct values per row: the conditioning is
    computed once per value; the same logits up to float rounding). `cond` (batch, length,
    cond_width) is added to the time embedding. `mask`: an explicit boolean attention mask
    (batch, 1, length, length), True where query i may attend to key j, used instead of
    `cfg.attention` and the segments (the any-order family's two-stream mask); every row
    must allow some key."""
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
    shift, scale = _modulation(c, self.final_modulation,
                               getattr(self, "final_modulation_bias", None), self.cfg.dtype)
    return h * (1 + scale) + shift

  def trunk(self, tokens, t=None, segment_ids=None, positions=None, *, rng=None, cond=None,
            mask=None) -> tuple[jax.Array, jax.Array | None]:
    """(hidden states after the blocks and the final norm (batch, length, width), the
    conditioning c (batch, length, cond_width), `TimeLevels` of it per value when `t` is
    given so, or None without time): what a family's own output head reads (CCDD's
    representation head)."""
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
      if cfg.positions == "learned":
        x = x + jnp.take(self.pos_embed[...], positions, axis=0).astype(dt)
    else:
      chex.assert_shape(tokens, (batch, length, cfg.width))
      x = tokens.astype(dt)
    x = constrain(x, ("batch", "length", "embed"), cfg.rules)
    c = None
    if cfg.conditioned:
      if t is None:
        raise ValueError("this backbone is time-conditioned: pass t of shape (batch, length)")
      if isinstance(t, TimeLevels):
        chex.assert_shape(t.index, (batch, length))
        chex.assert_rank(t.values, 2)
        c = TimeLevels(self.time_embedding(t.values), t.index)
        if cond is not None:  # a per-token addition: the conditioning is per token after all
          c = jnp.broadcast_to(c.spread(c.values), (batch, length, cfg.cond_width))
      else:
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
    x, _ = self._layers(lambda block, x, rng: (run_block(block, x, c, mask, positions, rng),
                                               None), x, layer_rngs)
    return self.norm_out(x), c

  def _layers(self, fn, x, per_layer):
    """x through the layers in order: `fn(block, x, per_layer[i]) -> (x, out_i)`; returns (x,
    the outs stacked over layers). `per_layer`: arrays (or None) with a leading layer axis.
    With `scan_layers` a jax.lax.scan over the stacked layers' state, not nnx.scan: samplers
    run the network inside their own loops, where nnx's transforms refuse a module captured
    from the enclosing trace."""
    if self.cfg.scan_layers:
      graphdef, stacked = nnx.split(self.blocks)
      return jax.lax.scan(lambda x, xs: fn(nnx.merge(graphdef, xs[0]), x, xs[1]), x,
                          (stacked, per_layer))
    outs = []
    for i, block in enumerate(self.blocks):
      x, out = fn(block, x, jax.tree.map(lambda a, i=i: a[i], per_layer))
      outs.append(out)
    return x, jax.tree.map(lambda *a: jnp.stack(a), *outs)

  def kv_cache(self, batch: int, length: int):
    """An empty key/value cache for `decode`: (keys, values), each (depth, batch, length,
    kv_heads, head_dim) in the compute dtype."""
    cfg = self.cfg
    shape = (cfg.depth, batch, length, cfg.kv_groups, cfg.head_dim)
    return jnp.zeros(shape, cfg.dtype), jnp.zeros(shape, cfg.dtype)

  def cached(self, tokens, positions, cache, mask, t=None):
    """Logits (batch, s, out_features) of a window of s tokens at canvas `positions` (batch,
    s) against a key/value `cache` of the canvas (`kv_cache`): the window's keys and values
    replace the cache's at its positions, and each query sees the canvas keys `mask` (batch,
    1, s, length) allows. With every position in the window it is `__call__` that also fills
    the cache; with fewer, the other positions' keys and values are the cache's (stale where
    their tokens changed since: Fast-dLLM's approximate cache). `t` (batch, s): the window's
    time, for a time-conditioned backbone. Returns (logits, the updated cache)."""
    cfg = self.cfg
    if not cfg.token_inputs or cfg.dropout:
      raise ValueError("cached decoding needs token inputs and no dropout")
    dt = jnp.dtype(cfg.dtype)
    x = jnp.take(self.embed[...], tokens, axis=0).astype(dt)
    if cfg.positions == "learned":
      x = x + jnp.take(self.pos_embed[...], positions, axis=0, mode="clip").astype(dt)
    c = self.time_embedding(t) if cfg.conditioned else None
    x, cache = self._layers(lambda block, x, kv: block.cached(x, c, positions, kv, mask), x,
                            cache)
    return self.head(self.modulate(self.norm_out(x), c)), cache

  def decode(self, tokens, positions, cache):
    """Causal decoding of a slice of tokens at `positions` (batch, s) with the key/value
    `cache` (`cached` with each position seeing the canvas positions up to its own): feeding
    a sequence slice by slice gives `__call__`'s causal logits (one document per row) at a
    slice's cost. Returns (logits, the updated cache)."""
    if self.cfg.attention != "causal":
      raise ValueError("decode needs a causal backbone")
    length = cache[0].shape[2]
    mask = jnp.arange(length)[None, None, None, :] <= positions[:, None, :, None]
    return self.cached(tokens, positions, cache, mask)

  def head(self, h):
    """The output head on hidden states (batch, length, width) -> float32 logits."""
    cfg = self.cfg
    dt = jnp.dtype(cfg.dtype)
    if cfg.tie_embeddings:
      scale = cfg.tied_head_scale or cfg.width**-0.5 / 0.02  # default: unit-scale at init
      unembed = self.embed[...].T.astype(dt) * jnp.asarray(scale, dt)
    else:
      unembed = self.unembed[...].astype(dt)
    logits = (h @ unembed).astype(jnp.float32)
    if cfg.head_bias:
      logits = logits + self.unembed_bias[...].astype(jnp.float32)
    if cfg.shift_logits:  # Dream: output i predicts token i + 1; realign (position 0 kept)
      logits = jnp.concatenate([logits[:, :1], logits[:, :-1]], axis=1)
    logits = constrain(logits, ("batch", "length", None if cfg.out_features else "vocab"),
                       cfg.rules)
    return logits
