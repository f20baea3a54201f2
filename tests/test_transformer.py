"""The shared backbone: masks, time conditioning, scan/remat equivalence, dtype policy."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dlm.models.layers import TimeLevels, attention_mask
from dlm.models.transformer import Transformer, TransformerConfig

CFG = TransformerConfig(vocab_size=37, width=32, depth=3, heads=4, cond_width=16)


def _randomize(model, seed=1):
  """Non-zero weights everywhere (zero-initialised heads would hide dependencies)."""
  graphdef, state = nnx.split(model)
  leaves, tree = jax.tree.flatten(nnx.to_pure_dict(state))
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  leaves = [0.3 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)]
  return nnx.merge(graphdef, jax.tree.unflatten(tree, leaves))


def _tokens(batch=2, length=12, seed=0):
  return jax.random.randint(jax.random.PRNGKey(seed), (batch, length), 0, CFG.vocab_size)


def _changed_outputs(cfg, x, position, segment_ids=None, t=None):
  """Which output positions change when the token at `position` changes."""
  model = _randomize(Transformer(cfg, nnx.Rngs(0)))
  y = x.at[:, position].set((x[:, position] + 1) % cfg.vocab_size)
  a, b = model(x, t, segment_ids), model(y, t, segment_ids)
  return np.asarray(jnp.abs(a - b).max(axis=(0, 2)) > 1e-6)


def test_shapes_and_float32_logits():
  model = Transformer(CFG, nnx.Rngs(0))
  x = _tokens()
  t = jnp.full(x.shape, 0.3)
  logits = model(x, t)
  assert logits.shape == (2, 12, CFG.vocab_size) and logits.dtype == jnp.float32
  with pytest.raises(ValueError, match="time-conditioned"):
    model(x)


def test_bidirectional_causal_and_block_causal_masks():
  x = _tokens()
  t = jnp.zeros(x.shape)
  bi = _changed_outputs(CFG, x, 5, t=t)
  assert bi.all()
  causal = _changed_outputs(dataclasses.replace(CFG, attention="causal"), x, 5, t=t)
  np.testing.assert_array_equal(causal, np.arange(12) >= 5)
  block = _changed_outputs(dataclasses.replace(CFG, attention="block_causal", block_size=4),
                           x, 5, t=t)
  np.testing.assert_array_equal(block, np.arange(12) >= 4)  # position 5 is in block 1


def test_segments_do_not_see_each_other():
  x = _tokens()
  seg = jnp.array([[1] * 5 + [2] * 5 + [0] * 2] * 2)
  changed = _changed_outputs(CFG, x, 7, segment_ids=seg, t=jnp.zeros(x.shape))
  np.testing.assert_array_equal(changed, (np.arange(12) >= 5) & (np.arange(12) < 10))
  mask = attention_mask(seg, "bidirectional")
  assert mask.shape == (2, 1, 12, 12) and bool(mask[0, 0, 11, 10]) and not mask[0, 0, 11, 0]


def test_adaln_zero_starts_time_blind_and_conditions_per_token():
  x = _tokens()
  model = Transformer(CFG, nnx.Rngs(0))
  model.unembed[...] = jax.random.normal(jax.random.PRNGKey(3), model.unembed[...].shape)
  np.testing.assert_allclose(model(x, jnp.zeros(x.shape)), model(x, jnp.ones(x.shape)),
                             atol=1e-6)  # adaLN-zero: modulations start at zero
  model = _randomize(model)
  t = jnp.zeros(x.shape)
  a, b = model(x, t), model(x, t.at[:, 3].set(0.9))
  assert float(jnp.abs(a - b).max()) > 1e-4  # a token's own time reaches the output
  blind = _randomize(Transformer(dataclasses.replace(CFG, time_conditioning="none"),
                                 nnx.Rngs(0)))
  assert blind(x).shape == a.shape


def _stack_blocks(loop_model, scan_model):
  """Copies a loop model's weights into a scanned model (layers stacked on axis 0)."""
  graphdef, state = nnx.split(scan_model)
  src = nnx.to_pure_dict(nnx.split(loop_model)[1])
  dst = dict(src)
  blocks = [src["blocks"][i] for i in range(len(src["blocks"]))]
  dst["blocks"] = jax.tree.map(lambda *xs: jnp.stack(xs), *blocks)
  return nnx.merge(graphdef, dst)


@pytest.mark.parametrize("remat", ["none", "full", "dots"])
def test_scan_and_remat_compute_the_same_function(remat):
  x = _tokens()
  t = jax.random.uniform(jax.random.PRNGKey(2), x.shape)
  loop = _randomize(Transformer(CFG, nnx.Rngs(0)))
  scan_cfg = dataclasses.replace(CFG, scan_layers=True, remat=remat)
  scan = _stack_blocks(loop, Transformer(scan_cfg, nnx.Rngs(0)))
  np.testing.assert_allclose(loop(x, t), scan(x, t), rtol=1e-5, atol=1e-5)

  def loss(model):
    return (model(x, t) ** 2).mean()

  g_loop = nnx.to_pure_dict(nnx.grad(loss)(loop))
  g_scan = nnx.to_pure_dict(nnx.grad(loss)(scan))
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs),
                         *[g_loop["blocks"][i] for i in range(CFG.depth)])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               stacked, g_scan["blocks"])


@pytest.mark.parametrize("scan_layers,remat,time_bias", [(False, "none", False),
                                                          (True, "full", True)])
def test_time_levels_give_the_per_token_logits_and_gradients(scan_layers, remat, time_bias):
  """Conditioning once per distinct time (a row's time; 0 for given tokens) computes what the
  per-token path does: logits and every parameter's gradient, with one level and with two."""
  x = _tokens(batch=3)
  cfg = dataclasses.replace(CFG, scan_layers=scan_layers, remat=remat, time_bias=time_bias)
  model = _randomize(Transformer(cfg, nnx.Rngs(0)))
  row_t = jnp.array([0.2, 0.7, 1.0])
  given = jnp.arange(12)[None, :] < jnp.array([[0], [3], [12]])  # none, a prompt, all given
  one = TimeLevels(row_t[:, None], jnp.zeros(x.shape, jnp.int32))
  two = TimeLevels(jnp.stack([row_t, jnp.zeros(3)], axis=1), given.astype(jnp.int32))
  for levels in (one, two):
    t = levels.per_token()
    np.testing.assert_array_equal(t, jnp.where(given, 0.0, row_t[:, None]) if
                                  levels is two else jnp.broadcast_to(row_t[:, None], x.shape))
    np.testing.assert_allclose(model(x, levels), model(x, t), rtol=1e-5, atol=1e-5)

    def loss(model, time):
      return (model(x, time) ** 2).mean()

    g_levels = nnx.to_pure_dict(nnx.grad(loss)(model, levels))
    g_tokens = nnx.to_pure_dict(nnx.grad(loss)(model, t))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 g_levels, g_tokens)
  # A per-token addition to the conditioning (CCDD's) makes it per token again, same numbers.
  cond = jax.random.normal(jax.random.PRNGKey(4), (3, 12, cfg.cond_width))
  np.testing.assert_allclose(model.features(x, two, cond=cond),
                             model.features(x, two.per_token(), cond=cond), rtol=1e-5,
                             atol=1e-5)


def test_bfloat16_compute_keeps_float32_params():
  x = _tokens()
  t = jnp.full(x.shape, 0.5)
  f32 = _randomize(Transformer(CFG, nnx.Rngs(0)))
  bf16 = nnx.merge(nnx.split(Transformer(dataclasses.replace(CFG, dtype="bfloat16"),
                                         nnx.Rngs(0)))[0], nnx.to_pure_dict(nnx.split(f32)[1]))
  params = jax.tree.leaves(nnx.to_pure_dict(nnx.split(bf16)[1]))
  assert all(p.dtype == jnp.float32 for p in params)
  a, b = f32(x, t), bf16(x, t)
  assert b.dtype == jnp.float32
  assert float(jnp.abs(a - b).max()) < 0.05 * float(jnp.abs(a).max())


def test_dropout_only_with_a_key():
  cfg = dataclasses.replace(CFG, dropout=0.5)
  model = _randomize(Transformer(cfg, nnx.Rngs(0)))
  x, t = _tokens(), jnp.zeros((2, 12))
  np.testing.assert_array_equal(model(x, t), model(x, t))
  assert float(jnp.abs(model(x, t, rng=jax.random.PRNGKey(0)) - model(x, t)).max()) > 1e-3


def test_tied_embeddings_share_the_table():
  cfg = dataclasses.replace(CFG, tie_embeddings=True)
  model = _randomize(Transformer(cfg, nnx.Rngs(0)))
  assert not hasattr(model, "unembed")
  x, t = _tokens(), jnp.zeros((2, 12))
  before = model(x, t)
  model.embed[...] = model.embed[...].at[3].add(1.0)  # changes token 3's input and output rows
  after = model(x, t)
  assert float(jnp.abs(after - before)[..., 3].max()) > 1e-3


def test_rotary_layouts_are_the_same_rotation_of_permuted_pairs():
  from dlm.models.layers import rotary

  x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 3, 8))
  positions = jnp.broadcast_to(jnp.arange(5), (2, 5))
  # interleaved pairs (2i, 2i+1) are half-split pairs (i, i + 4) after gathering evens, odds
  perm = jnp.asarray([0, 2, 4, 6, 1, 3, 5, 7])
  inverse = jnp.argsort(perm)
  half = rotary(x[..., perm], positions, 1e4, "half")[..., inverse]
  np.testing.assert_allclose(rotary(x, positions, 1e4, "interleaved"), half, atol=1e-6)
  assert float(jnp.abs(rotary(x, positions, 1e4, "half") - half).max()) > 1e-2


def test_grouped_query_attention_equals_repeated_key_value_heads():
  # kv_heads=2 of 4: query heads 2j and 2j+1 read kv head j (Qwen2's repeat_kv), which a full
  # multi-head model with each kv head's weights copied into both of its query heads computes.
  gqa_cfg = dataclasses.replace(CFG, kv_heads=2, qkv_bias=True, time_conditioning="none")
  gqa = _randomize(Transformer(gqa_cfg, nnx.Rngs(0)))
  full = Transformer(dataclasses.replace(gqa_cfg, kv_heads=0), nnx.Rngs(0))
  state = nnx.to_pure_dict(nnx.state(gqa))
  target = nnx.to_pure_dict(nnx.state(full))
  for i in range(CFG.depth):
    src, dst = state["blocks"][i]["attn"], target["blocks"][i]["attn"]
    kv, bkv = jnp.repeat(src["wkv"], 2, axis=2), jnp.repeat(src["bkv"], 2, axis=1)
    dst["wqkv"] = jnp.concatenate([src["wq"][:, None], kv], axis=1)
    dst["bqkv"] = jnp.concatenate([src["bq"][None], bkv], axis=0)
    dst["wo"] = src["wo"]
    for name in ("norm_attn", "norm_mlp", "mlp"):
      target["blocks"][i][name] = state["blocks"][i][name]
  for name in ("embed", "norm_out", "unembed", "unembed_bias"):
    target[name] = state[name]
  full = nnx.merge(nnx.graphdef(full), target)
  x = _tokens()
  np.testing.assert_allclose(gqa(x), full(x), atol=1e-5)


def test_bfloat16_storage():
  cfg = dataclasses.replace(CFG, param_dtype="bfloat16", norm="layer", norm_bias=True,
                            mlp="gelu", mlp_bias=True, time_bias=True)
  model = nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0)))
  params = jax.tree.leaves(nnx.to_pure_dict(nnx.state(model)))
  assert params and all(p.dtype == jnp.bfloat16 for p in params)
  x = _tokens()
  out = jax.eval_shape(lambda m: m(x, jnp.full(x.shape, 0.5)), model)
  assert out.dtype == jnp.float32
