"""Any-subset autoregressive models and ASSD: exactness against a known joint, the NFE bound,
the two-stream mask (a target never sees itself or later targets), training."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import stats

from dlm import samplers
from dlm.errors import DlmError
from dlm.models.any_order import AnyOrderAR, AnyOrderConfig, target_levels, two_stream_mask
from dlm.models.transformer import TransformerConfig
from dlm.samplers import any_order
from dlm.samplers.core import Canvas, SamplerConfig
from toy_joint import MASK, VOCAB, codes, conditional_table, joint

LENGTH = 5
N = 20_000


@pytest.fixture(scope="module")
def toy():
  """A toy any-order model on 3^5 sequences and the exact distribution of its sequential
  sampling: (sequences, their probabilities, cond)."""
  seqs, p = joint(seed=3, concentration=1.0, length=LENGTH)
  cond = _toy_cond(conditional_table(seqs, p, floor=-1e9))
  xs, q = _sequential_distribution(cond, seqs)
  return xs, q, cond


def _toy_cond(table, weight=0.7):
  """cond(tokens, levels)[b, i] = log p(x_i | tokens of lower level) under a known joint (with
  strongly dependent tokens), plus a term that, as in a network and unlike an exact
  conditional, depends on how the known tokens are arranged: on which of them are targets
  (level > 0) rather than given (level 0). A sampler that moves decoded tokens to level 0, or
  computes a factor with other levels than the sequential sampler, samples another joint."""
  c = codes(LENGTH)
  w = weight * jax.random.normal(jax.random.PRNGKey(5), (LENGTH, VOCAB + 1, VOCAB + 1))

  def cond(tokens, levels):
    seen = levels[:, None, :] < levels[:, :, None]  # (batch, i, j): i conditions on j
    z = jnp.where(seen, tokens[:, None, :], MASK)
    exact = table[(z * c).sum(-1), jnp.arange(LENGTH)[None, :]]
    targets_seen = (seen & (levels[:, None, :] > 0)).astype(jnp.float32)
    per_token = w[jnp.arange(LENGTH)[None, :], tokens]  # (batch, j, vocab)
    return exact + jnp.einsum("bij,bjv->biv", targets_seen, per_token)

  return cond


def _sequential_distribution(cond, seqs, given_tokens=None, given=None,
                             decoded_at_level0=False):
  """The sequences consistent with the given tokens and the exact probability that
  `sequential` draws each: the product of its left-to-right factors (levels: given 0, the n-th
  target n). `decoded_at_level0`: the joint of a sampler that treats decoded tokens as given."""
  given = np.zeros(LENGTH, bool) if given is None else np.asarray(given)
  xs = seqs[np.all(seqs[:, given] == np.asarray(given_tokens)[given], axis=1)
            if given.any() else np.ones(len(seqs), bool)]
  rank, order, count = any_order.decoding_order(jnp.asarray(given)[None])
  rank, order = np.asarray(rank[0]), np.asarray(order[0])
  logp = np.zeros(len(xs))
  for n in range(int(count[0])):
    known = (rank >= 0) & (rank < n) | given
    levels = np.where(given, 0, rank + 1)
    if decoded_at_level0:
      levels = np.where(known, 0, 1)
    tokens = jnp.asarray(np.where(known, xs, MASK))
    pos = order[n]
    logits = cond(tokens, jnp.broadcast_to(jnp.asarray(levels), xs.shape))[:, pos, :VOCAB]
    logp += np.asarray(jax.nn.log_softmax(logits))[np.arange(len(xs)), xs[:, pos]]
  probs = np.exp(logp)
  assert abs(probs.sum() - 1) < 1e-4
  return xs, probs


def test_the_toy_tells_a_fixed_mask_from_decoded_tokens_at_level0(toy):
  """The two samplers' joints differ by much more than the chi-square tests can miss."""
  xs, q, cond = toy
  _, q0 = _sequential_distribution(cond, xs, decoded_at_level0=True)
  assert 0.5 * np.abs(q - q0).sum() > 0.05


def _chi2_test(samples, seqs, p):
  """(statistic, critical value at p = 0.001) of a chi-square goodness-of-fit test of sequences
  against probabilities p (cells expected below 5 pooled)."""
  index = {tuple(s): i for i, s in enumerate(seqs.tolist())}
  counts = np.zeros(len(seqs))
  for s in np.asarray(samples).tolist():
    counts[index[tuple(s)]] += 1
  expected = p * len(samples)
  small = expected < 5
  obs = np.append(counts[~small], counts[small].sum())
  exp = np.append(expected[~small], expected[small].sum())
  keep = exp > 0
  stat = float(((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum())
  return stat, float(stats.chi2.ppf(0.999, keep.sum() - 1))


def _sample(cond, cfg, canvas, seed=0):
  fn = jax.jit(lambda rng, c: any_order.run(cond, cfg, rng, c, MASK))
  return jax.device_get(fn(jax.random.PRNGKey(seed), canvas))


def _blank(n):
  return samplers.blank_canvas(n, LENGTH, MASK)


@pytest.mark.parametrize("name, k", [("sequential", 1), ("assd", 2), ("assd", 5)])
def test_samples_follow_the_exact_joint_and_nfe_is_bounded(toy, name, k):
  seqs, p, cond = toy
  out = _sample(cond, SamplerConfig(name=name, draft_length=k), _blank(N))
  stat, critical = _chi2_test(out.tokens, seqs, p)
  assert stat < critical, (stat, critical)
  assert (out.nfe <= LENGTH).all()
  if name == "sequential":
    assert (out.nfe == LENGTH).all()
  else:  # drafts are often accepted: fewer calls than tokens on average, yet exact
    assert out.nfe.mean() < LENGTH - 0.5
  assert (out.revealed_at >= 0).all()


def test_independent_drafts_alone_do_not_follow_the_joint(toy):
  """The test has power: accepting every draft samples a product of marginals."""
  seqs, p, cond = toy
  levels = jnp.ones((N, LENGTH), jnp.int32)
  logits = cond(jnp.full((N, LENGTH), MASK), levels)[..., :VOCAB]
  draws = jax.random.categorical(jax.random.PRNGKey(0), logits)
  stat, critical = _chi2_test(draws, seqs, p)
  assert stat > 10 * critical


def test_infilling_and_prefix_rows_in_one_batch(toy):
  """Rows with different given positions (so different numbers of tokens to draw and accept)
  in one batch: each follows the exact distribution of sequential sampling from its canvas."""
  seqs, _, cond = toy
  half = N // 2
  tokens = np.full((N, LENGTH), MASK, np.int32)
  given = np.zeros((N, LENGTH), bool)
  tokens[:half, 0], given[:half, 0] = 1, True  # a prefix prompt
  tokens[half:, 1], given[half:, 1] = 2, True  # infilling around two given tokens
  tokens[half:, 4], given[half:, 4] = 0, True
  out = _sample(cond, SamplerConfig(name="assd", draft_length=3),
                Canvas(jnp.asarray(tokens), jnp.asarray(given)))
  assert (out.tokens[given] == tokens[given]).all()
  assert (out.revealed_at[given] == -1).all()
  assert (out.nfe <= (~given).sum(1)).all()
  for rows in (slice(0, half), slice(half, N)):
    xs, q = _sequential_distribution(cond, seqs, tokens[rows][0], given[rows][0])
    stat, critical = _chi2_test(out.tokens[rows], xs, q)
    assert stat < critical, (rows, stat, critical)


def test_independent_tokens_are_all_accepted():
  """A product distribution: the drafts are the joint, so k = 4 drafts and the bonus token
  fill 5 positions in 2 calls; k = 1 is sequential (5 calls)."""
  probs = np.array([0.5, 0.3, 0.2], np.float32)
  logits = jnp.asarray(np.log(np.append(probs, 1e-9)))

  def cond(tokens, levels):
    return jnp.broadcast_to(logits, tokens.shape + (VOCAB + 1,))

  for k, nfe in ((4, 2), (2, 4), (1, 5)):  # k = 2: 2 drafts + bonus, then the last 2
    out = _sample(cond, SamplerConfig(name="assd", draft_length=k), _blank(8))
    assert (out.nfe == nfe).all(), k


def test_bad_draft_length_is_a_clear_error(toy):
  with pytest.raises(DlmError, match="draft_length"):
    samplers.check(SamplerConfig(name="assd", draft_length=0), LENGTH, "any_order")
  with pytest.raises(DlmError, match="does not sample"):
    samplers.check(SamplerConfig(name="ancestral"), LENGTH, "any_order")


def test_two_stream_mask_hides_a_target_and_later_targets():
  rng = np.random.default_rng(0)
  length = 12
  targets = rng.random((3, length)) < 0.7
  levels = np.asarray(target_levels(jnp.asarray(targets), jnp.asarray(rng.random((3, length)))))
  seg = np.ones((3, length), np.int32)
  seg[2, 6:] = 2
  mask = np.asarray(two_stream_mask(jnp.asarray(levels), jnp.asarray(seg)))[:, 0]
  cc, cq = mask[:, :length, :length], mask[:, :length, length:]
  qc, qq = mask[:, length:, :length], mask[:, length:, length:]
  assert not cq.any()  # content never reads the query stream
  assert (qq == np.eye(length, dtype=bool)).all()
  for b in range(3):
    assert sorted(levels[b][targets[b]]) == list(range(1, targets[b].sum() + 1))
    for i in range(length):
      for j in range(length):
        same = seg[b, i] == seg[b, j]
        # a query (target) sees exactly the known tokens and the earlier targets
        assert qc[b, i, j] == (same and levels[b, j] < levels[b, i])
        # known tokens never see a target; a target's content sees itself and earlier ones
        assert cc[b, i, j] == (same and levels[b, j] <= levels[b, i])
    assert not qc[b][np.eye(length, dtype=bool)].any()  # never itself


def _tiny_model(seed=0):
  net = TransformerConfig(vocab_size=24, width=32, depth=2, heads=2, head_init_std=0.3)
  return AnyOrderAR(net, AnyOrderConfig(), 23, nnx.Rngs(seed))


def _jitted(model, method):
  graphdef, state = nnx.split(model)
  fn = jax.jit(lambda state, *args: getattr(nnx.merge(graphdef, state), method)(*args))
  return lambda *args: fn(state, *args)


def test_network_predictions_depend_only_on_lower_levels():
  """In the real network: changing a target's own token or a later target's changes nothing
  at that target; changing an earlier target or a known token does."""
  logits = _jitted(_tiny_model(), "denoise")
  length = 10
  x = jax.random.randint(jax.random.PRNGKey(0), (1, length), 0, 23)
  levels = jnp.asarray([[0, 3, 1, 0, 4, 2, 0, 5, 6, 0]], jnp.int32)
  base = logits(x, levels)
  at = 5  # level 2: sees levels 0 and 1 (positions 0, 3, 6, 9 and 2)
  for pos, visible in ((5, False), (1, False), (4, False), (7, False), (2, True), (0, True)):
    changed = logits(x.at[0, pos].set((x[0, pos] + 1) % 23), levels)
    diff = float(jnp.abs(changed[0, at] - base[0, at]).max())
    assert (diff > 1e-4) if visible else (diff == 0.0), (pos, diff)
  # independent mode (all targets at level 1): no target sees any other target
  flat = jnp.where(levels > 0, 1, 0)
  base = logits(x, flat)
  changed = logits(x.at[0, 2].set((x[0, 2] + 1) % 23), flat)
  assert float(jnp.abs(changed[0, 5] - base[0, 5]).max()) == 0.0


def test_corrupt_keeps_given_tokens_known_and_rates_in_range():
  model = _tiny_model()
  rows, length = 16, 40
  x = jax.random.randint(jax.random.PRNGKey(1), (rows, length), 0, 23)
  given = jnp.zeros((rows, length), bool).at[:, :6].set(True)
  seg = jnp.ones((rows, length), jnp.int32).at[:, -4:].set(0)  # padding
  batch = {"tokens": x, "segment_ids": seg, "given": given,
           "positions": jnp.broadcast_to(jnp.arange(length), x.shape)}
  noisy = jax.device_get(_jitted(model, "corrupt")(batch, jax.random.PRNGKey(2)))
  targets, levels = noisy["scored"], noisy["levels"]
  assert not targets[:, :6].any() and not targets[:, -4:].any()
  assert (levels[~targets] == 0).all()
  rate = targets.sum(1) / 30
  assert (rate >= 0.85 - 1 / 30).all() and (rate <= 0.99 + 1 / 30).all()
  for b in range(rows):  # left to right
    assert (np.diff(levels[b][targets[b]]) == 1).all() and levels[b][targets[b]][0] == 1
  _, metrics = _jitted(model, "loss")(noisy)
  assert int(metrics["tokens"]) == int(targets.sum())


def test_training_through_the_shared_step_lowers_the_loss():
  from dlm import config as config_lib
  from dlm import models, sharding
  from dlm.train import optimizer as optim
  from dlm.train import state as state_lib
  from dlm.train import step as step_lib

  config = config_lib.base_config()
  config.model.update(family="any_order", width=32, depth=1, heads=2, time_conditioning="none",
                      head_init_std=32**-0.5)
  config.train.update(batch_size=8, lr=1e-2, warmup_steps=2, steps=30)
  config = config_lib.validate(config)

  class Vocab:
    vocab_size, mask_id = 24, 23

  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  tx, lr = optim.optimizer(config.train)
  graphdef, state, shardings = state_lib.create(
      lambda r: models.build(config, Vocab(), r), tx, mesh, config.mesh.rules, 0)
  length = 16
  base = np.asarray(jax.random.randint(jax.random.PRNGKey(0), (4, length), 0, 23))
  tokens = jnp.asarray(np.tile(base, (2, 1)))  # four repeated sequences: learnable
  batch = {"tokens": tokens, "segment_ids": jnp.ones_like(tokens),
           "positions": jnp.broadcast_to(jnp.arange(length), tokens.shape),
           "given": jnp.zeros(tokens.shape, bool)}
  batch_sharding = sharding.named_sharding(mesh, ("batch", "length"), (("batch", "data"),))
  step = step_lib.make_train_step(graphdef, tx, lr, config.train, shardings, batch_sharding)
  losses = []
  with jax.set_mesh(mesh):
    batch = jax.device_put(batch, batch_sharding)
    for _ in range(30):
      state, m = step(state, batch)
      losses.append(float(m["loss"]))
  assert np.all(np.isfinite(losses))
  assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
