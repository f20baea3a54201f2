"""ADJUST's joint-sampling head (dlm/models/joint_head.py) and samplers
(dlm/samplers/joint_head.py): the head's identity start, frozen training, and the samplers
against a known joint."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dlm import config as config_lib
from dlm import registry, samplers, sharding
from dlm.data import pipeline
from dlm.errors import DlmError
from dlm.models.joint_head import JointConfig, JointHead
from dlm.models.masked import MaskedDiffusion
from dlm.models.transformer import TransformerConfig
from dlm.processes.masked import MaskedProcess
from dlm.processes.schedules import MaskingSchedule
from dlm.samplers import joint_head as joint_lib
from dlm.samplers.core import Canvas, SamplerConfig
from dlm.train import optimizer as optim
from dlm.train import pretrained
from dlm.train import state as state_lib
from dlm.train import step as step_lib
from toy_joint import CODES, LENGTH, MASK, VOCAB, conditional_table, joint

CHI2_26_P001 = 54.05  # chi-square critical value, 26 degrees of freedom, p = 0.001
V, L = 13, 8  # tiny model: 12 tokens + [MASK] = 12


def _head(zero_init=True, noising="trajectory", seed=0, unrolls=3):
  net = TransformerConfig(vocab_size=V, width=32, depth=2, heads=2, time_conditioning="none",
                          head_init_std=0.5)
  process = MaskedProcess(schedule=MaskingSchedule("linear"), mask_id=V - 1, vocab_size=V)
  rngs = nnx.Rngs(seed)
  return JointHead(MaskedDiffusion(net, process, rngs),
                   JointConfig(unrolls=unrolls, noising=noising, zero_init=zero_init), rngs)


def _z(rng, batch=4):
  x = jax.random.randint(rng, (batch, L), 0, V - 1)
  return jnp.where(jax.random.uniform(jax.random.fold_in(rng, 1), x.shape) < 0.5, V - 1, x)


@pytest.fixture(scope="module")
def model():
  return _head(zero_init=False)


def test_zero_layer_output_gives_h_prev_through_the_frozen_head(model):
  model = nnx.clone(model)
  model.head.norm_out.scale[...] = jnp.zeros_like(model.head.norm_out.scale[...])
  z = _z(jax.random.PRNGKey(0))
  z2 = z.at[:, 0].set(3)  # tokens changed: the head sees them, but its output is zero

  @nnx.jit
  def run(model, z, z2):
    base_logits, h = model.denoise(z, jnp.zeros(z.shape, bool))
    logits, h2 = model.refine(z2, h)
    return base_logits, h, logits, h2, model.base.net.head(h)

  base_logits, h, logits, h2, through_head = run(model, z, z2)
  np.testing.assert_allclose(h2, h, atol=0)
  expected = through_head.at[..., V - 1].set(-jnp.inf)
  np.testing.assert_allclose(logits, expected, rtol=1e-6)
  np.testing.assert_allclose(logits, base_logits, rtol=1e-6)
  # power: once the output norm is not zero the head changes the logits
  model.head.norm_out.scale[...] = jnp.ones_like(model.head.norm_out.scale[...])
  moved = run(model, z, z2)[2]
  assert float(jnp.max(jnp.abs(jnp.where(jnp.isfinite(moved), moved - expected, 0)))) > 1e-2


def _batch(rng, batch=8):
  """Rows of tokens with a random reveal order (a stand-in trajectory)."""
  tokens = jax.random.randint(rng, (batch, L), 0, V - 1)
  order = jnp.argsort(jax.random.uniform(jax.random.fold_in(rng, 1), (batch, L)), axis=-1)
  order = jnp.argsort(order, axis=-1).astype(jnp.int32)
  segs = jnp.ones((batch, L), jnp.int32).at[-1, L - 2:].set(0)  # a padded tail
  return {"tokens": tokens, "order": order, "segment_ids": segs,
          "positions": jnp.broadcast_to(jnp.arange(L), (batch, L)),
          "given": jnp.zeros((batch, L), bool)}


def test_trajectory_noising_masks_the_end_of_the_reveal_order(model):
  batch = _batch(jax.random.PRNGKey(1), batch=16)
  noisy = nnx.jit(lambda m, b, r: m.corrupt(b, r))(model, batch, jax.random.PRNGKey(2))
  masked = np.asarray(noisy["z"] == V - 1)
  order = np.asarray(batch["order"])
  real = np.asarray(batch["segment_ids"] > 0)
  assert masked.any() and (~masked & real).any()
  assert not (masked & ~real).any()
  for m, o, r in zip(masked, order, real):
    if m.any() and (~m & r).any():
      assert o[m].min() > o[~m & r].max()
  assert set(np.asarray(noisy["unroll"]).tolist()) <= {1, 2, 3}


def test_training_leaves_the_base_unchanged():
  """Three steps ('random' noising: reveals by the base's entropy) from the zero-init head."""
  make = lambda rngs: _head(zero_init=True, noising="random")  # noqa: E731
  cfg = config_lib.base_config().train
  cfg.update(lr=1e-2, warmup_steps=1, steps=10, ema_decay=0.5)
  abstract = nnx.eval_shape(lambda: make(None))
  frozen = pretrained.frozen_mask(abstract, nnx.to_pure_dict(nnx.state(abstract)))
  tx, lr = optim.optimizer(cfg, frozen)
  mesh = sharding.make_mesh((-1, 1, 1))
  rules = config_lib.base_config().mesh.rules
  graphdef, state, shardings = state_lib.create(make, tx, mesh, rules, 0)
  before = jax.tree.map(lambda x: np.array(x, copy=True), state.params)  # state is donated
  np.testing.assert_array_equal(before["head"]["norm_out"]["scale"], 0)  # zero_init
  batch_sharding = pipeline.batch_sharding(mesh, rules)
  step = step_lib.make_train_step(graphdef, tx, lr, cfg, shardings, batch_sharding, frozen)
  with jax.set_mesh(mesh):
    for i in range(3):
      batch = jax.device_put(_batch(jax.random.PRNGKey(10 + i)), batch_sharding)
      state, metrics = step(state, batch)
  after = jax.tree.map(np.asarray, state.params)
  assert np.isfinite(float(metrics["loss"])) and float(metrics["tokens"]) > 0
  for path, value in pretrained.flat(before["base"]).items():
    np.testing.assert_array_equal(pretrained.flat(after["base"])[path], value, err_msg=path)
    np.testing.assert_array_equal(pretrained.flat(jax.device_get(state.ema)["base"])[path],
                                  value, err_msg=path)
  changed = [p for p, v in pretrained.flat(before["head"]).items()
             if not np.array_equal(pretrained.flat(after["head"])[p], v)]
  assert len(changed) == len(pretrained.flat(before["head"]))  # every head parameter trains
  # no optimizer moments for the frozen base
  moments = sum(x.size for x in jax.tree.leaves(state.opt_state))
  head_size = sum(x.size for x in jax.tree.leaves(before["head"]))
  assert moments < 3 * head_size + 100


def test_k0_adjust_and_marginal_are_exact_sampling(model):
  canvas = Canvas(jnp.full((6, L), V - 1, jnp.int32).at[:, 2].set(4),
                  jnp.zeros((6, L), bool).at[:, 2].set(True))
  outs = {name: samplers.generate(model, SamplerConfig(name=name, steps=L), jax.random.PRNGKey(3),
                                  canvas)
          for name in joint_lib.MODES}
  for name in ("adjust", "marginal"):
    np.testing.assert_array_equal(outs[name].tokens, outs["exact"].tokens)
    np.testing.assert_array_equal(outs[name].revealed_at, outs["exact"].revealed_at)
  assert int(outs["adjust"].sampler_passes.max()) == 0
  np.testing.assert_array_equal(outs["exact"].nfe, L - 1)
  assert bool(jnp.all(outs["exact"].tokens[:, 2] == 4))
  assert not bool(jnp.any(outs["exact"].tokens == V - 1))


def test_pass_counts(model):
  canvas = samplers.blank_canvas(3, L, V - 1)
  cfg = SamplerConfig(name="adjust", steps=3)  # 3 tokens per pass: 3 + 3 + 2
  out = samplers.generate(model, cfg, jax.random.PRNGKey(0), canvas)
  np.testing.assert_array_equal(out.nfe, 3)
  np.testing.assert_array_equal(out.sampler_passes, 5)
  assert sorted(np.asarray(out.revealed_at[0]).tolist()) == list(range(L))
  marginal = samplers.generate(model, SamplerConfig(name="marginal", steps=3),
                               jax.random.PRNGKey(0), canvas)
  np.testing.assert_array_equal(marginal.nfe, 3)
  np.testing.assert_array_equal(marginal.sampler_passes, 0)
  f = joint_lib.flops(model, L)
  assert 0 < f["sampler_pass"] < f["full_pass"]
  with pytest.raises(DlmError, match="does not sample"):
    samplers.check(SamplerConfig(name="adjust", steps=4), L, "masked")
  with pytest.raises(DlmError, match="block_length"):
    samplers.check(SamplerConfig(name="adjust", steps=4, block_length=4), L, "joint_head")


class _ExactToy:
  """A stand-in JointHead whose base and head both return the exact conditionals of a known
  joint over length-3 sequences (tests/toy_joint.py): a perfect sampler head."""

  def __init__(self, seqs, p):
    self.table = conditional_table(seqs, p, floor=-1e9)
    self.mask_id = MASK

  def denoise(self, z, given):
    del given
    logits = self.table[(z * CODES).sum(axis=1)]
    return logits.at[..., MASK].set(-jnp.inf), jnp.zeros(z.shape + (1,))

  def refine(self, z, h):
    return self.denoise(z, None)[0], h


def _chi2(samples, seqs, p):
  index = {tuple(s): i for i, s in enumerate(seqs.tolist())}
  counts = np.zeros(len(seqs))
  for s in np.asarray(samples).tolist():
    counts[index[tuple(s)]] += 1
  expected = p * len(samples)
  return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("name, steps, joint_ok", [("exact", 1, True), ("adjust", 1, True),
                                                   ("adjust", 2, True), ("marginal", 1, False)])
def test_toy_joint(name, steps, joint_ok):
  """One full pass for all three tokens: a perfect head samples the joint, the marginal
  baseline the product of the marginals; `exact` (one per pass) the joint."""
  seqs, p = joint(seed=1, concentration=1.0)
  model = _ExactToy(seqs, p)
  canvas = samplers.blank_canvas(20_000, LENGTH, MASK)
  sampling = SamplerConfig(name=name, steps=steps)
  fn = jax.jit(lambda rng: joint_lib.joint_head_sampler(model, sampling, rng, canvas))
  out = fn(jax.random.PRNGKey(0))
  chi2 = _chi2(out.tokens, seqs, p)
  if joint_ok:
    assert chi2 < CHI2_26_P001
  else:
    assert chi2 > 10 * CHI2_26_P001
  expected_nfe = {"exact": LENGTH}.get(name, steps)
  np.testing.assert_array_equal(out.nfe, expected_nfe)


def test_log_prob_exact_is_the_joint():
  seqs, p = joint(seed=2, concentration=1.0)
  model = _ExactToy(seqs, p)
  logp = joint_lib.log_prob_exact(model, jnp.asarray(seqs), jnp.zeros(seqs.shape, bool))
  np.testing.assert_allclose(np.exp(np.asarray(logp)), p, rtol=1e-4, atol=1e-7)


def test_pretokenized_rows_and_errors():
  rows = pipeline._IdRows(6, pad_id=0)
  row = rows.map(json.dumps({"tokens": [5, 6, 7], "order": [2, 0, 1]}))
  np.testing.assert_array_equal(row["tokens"], [5, 6, 7, 0, 0, 0])
  np.testing.assert_array_equal(row["order"], [2, 0, 1, -1, -1, -1])
  np.testing.assert_array_equal(row["segment_ids"], [1, 1, 1, 0, 0, 0])
  for bad in ("not json", json.dumps({"ids": [1]}), json.dumps({"tokens": list(range(7))}),
              json.dumps({"tokens": [1, 2], "order": [0]})):
    with pytest.raises(DlmError, match="pretokenized"):
      rows.map(bad)


def test_config_errors():
  config = config_lib.base_config()
  config.model.update(family="joint_head", width=32, heads=2)
  with pytest.raises(DlmError, match="init_from"):
    config_lib.validate(config)
  config.train.update(init_from="somewhere", init_into="base")
  config_lib.validate(config)
  config.joint.noising = "sideways"
  with pytest.raises(DlmError, match="joint.noising"):
    config_lib.validate(config)
  config.joint.noising = "random"
  config.data.pretokenized = True
  with pytest.raises(DlmError, match="tokenizer.path"):
    config_lib.validate(config)
  with pytest.raises(DlmError, match="joint.noising"):
    JointHead(None, JointConfig(noising="x"), nnx.Rngs(0))
  assert "joint_head" in registry.names()
