"""Conditional log-likelihoods (dlm/likelihood.py): the masked family's Monte Carlo ELBO against
an enumerated exact value, the autoregressive family's exact sum."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dlm import likelihood
from toy_joint import MASK, codes, conditional_table, joint

LENGTH, CONTEXT = 5, 2


@pytest.fixture(scope="module")
def toy():
  seqs, p = joint(seed=3, concentration=0.5, length=LENGTH)
  table = conditional_table(seqs, p, floor=-1e9)
  return seqs, p, lambda z, t: table[(z * codes(LENGTH)).sum(axis=1)]


def _exact_conditional(seqs, p, row):
  """log p(y | x) by enumeration: the joint over every sequence sharing the context x."""
  same_context = np.all(seqs[:, :CONTEXT] == row[:CONTEXT], axis=1)
  this = np.all(seqs == row, axis=1)
  return math.log(p[this].sum() / p[same_context].sum())


def test_the_masked_bound_is_log_p_for_exact_conditionals_and_its_estimate_unbiased(toy):
  seqs, p, denoise = toy
  row = seqs[int(np.argmax(p))]  # a likely sequence
  exact = _exact_conditional(seqs, p, row)
  tokens = jnp.asarray(row)[None]
  continuation = jnp.arange(LENGTH)[None] >= CONTEXT
  total = LENGTH - CONTEXT
  # The bound by enumeration: the mean over l of the mean over the l-subsets.
  bound = 0.0
  for l in range(1, total + 1):
    subsets = list(itertools.combinations(range(CONTEXT, LENGTH), l))
    for subset in subsets:
      z = np.array(row)
      z[list(subset)] = MASK
      logits = np.asarray(denoise(jnp.asarray(z)[None], None))[0]
      log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
      bound += (total / l) * sum(log_p[i, row[i]] for i in subset) / len(subsets) / total
  assert bound == pytest.approx(exact, abs=1e-4)  # exact conditionals: the bound is tight
  # The Monte Carlo estimate (stratified counts, random subsets) around it.
  batch = 64
  terms = jax.jit(lambda counts, key: likelihood.masked_terms(
      denoise, jnp.repeat(tokens, batch, 0), jnp.repeat(continuation, batch, 0), MASK, counts,
      key))
  mean, stderr = likelihood.mc_estimate(terms, total, samples=64 * batch, batch_size=batch,
                                        rng=jax.random.PRNGKey(0))
  assert stderr > 0
  assert abs(mean - exact) < 3 * stderr, (mean, exact, stderr)
  counts = likelihood.stratified_counts(jax.random.PRNGKey(1), 8, total)
  assert set(np.asarray(counts).tolist()) <= set(range(1, total + 1))


def _tiny(family):
  from dlm.models.autoregressive import AutoRegressive
  from dlm.models.masked import MaskedDiffusion
  from dlm.models.transformer import TransformerConfig
  from dlm.processes.masked import MaskedProcess
  from dlm.processes.schedules import MaskingSchedule

  cfg = TransformerConfig(vocab_size=17, width=32, depth=2, heads=4, cond_width=16,
                          head_init_std=0.5)
  if family == "autoregressive":
    make = lambda: AutoRegressive(cfg, nnx.Rngs(0))  # noqa: E731
  else:
    process = MaskedProcess(schedule=MaskingSchedule("linear"), mask_id=16, vocab_size=17)
    make = lambda: MaskedDiffusion(cfg, process, nnx.Rngs(0))  # noqa: E731
  graphdef, state = nnx.split(nnx.eval_shape(make))
  leaves, tree = jax.tree.flatten(nnx.to_pure_dict(state))
  rng = np.random.default_rng(0)
  values = [jnp.asarray(0.3 * rng.standard_normal(x.shape), x.dtype) for x in leaves]
  return nnx.merge(graphdef, jax.tree.unflatten(tree, values))


def test_autoregressive_likelihood_is_the_exact_sum_of_token_log_probs():
  model = _tiny("autoregressive")
  context, continuation = [3, 5, 7, 1], [2, 9, 4]
  got = likelihood.Scorer(model).score(context, continuation)
  tokens = jnp.asarray([context + continuation])
  log_p = jax.nn.log_softmax(model.denoise(tokens), axis=-1)[0]
  expected = sum(float(log_p[len(context) - 1 + i, y]) for i, y in enumerate(continuation))
  assert got.value == pytest.approx(expected, abs=1e-5)
  assert got.stderr == 0.0
  greedy = []
  for _ in continuation:  # greedy decoding, one token at a time
    greedy.append(int(jnp.argmax(model.denoise(jnp.asarray([context + greedy]))[0, -1])))
  assert got.is_greedy == (greedy == continuation)
  assert likelihood.Scorer(model).score(context, greedy).is_greedy


def test_masked_scorer_pads_without_changing_the_estimate():
  model = _tiny("masked")
  context, continuation = [3, 5, 7, 1], [2, 9, 4]
  a, b = (likelihood.Scorer(model, samples=1024, batch_size=64, seed=1, pad_multiple=pad).score(
      context, continuation) for pad in (8, 64))
  assert a.value < 0 and a.stderr > 0
  # Padding is unseen by the real tokens (only the masks drawn differ with the width).
  assert abs(a.value - b.value) < 3 * math.hypot(a.stderr, b.stderr)


@pytest.mark.parametrize("family", ["autoregressive", "masked"])
def test_requests_scored_together_equal_those_scored_one_by_one(family):
  model = _tiny(family)
  requests = [([3, 5, 7, 1], [2, 9, 4]), ([4, 4], [1]), ([2] * 40, [5, 6]),
              ([1, 2, 3], [7, 8, 9, 10]), ([6], [3])]
  for samples in (4, 16):  # 2 requests' groups per call; 2 groups of 8 per request
    options = dict(samples=samples, batch_size=8, seed=2, pad_multiple=8)
    together = likelihood.Scorer(model, **options).score_many(requests)
    one_by_one = likelihood.Scorer(model, **options)
    for got, request in zip(together, requests):
      want = one_by_one.score(*request)
      assert got.value == pytest.approx(want.value, abs=1e-5)
      assert got.is_greedy == want.is_greedy
      np.testing.assert_allclose(got.stderr, want.stderr, atol=1e-5)
    if family == "masked":
      assert np.isnan(together[0].stderr) == (samples == 4)
