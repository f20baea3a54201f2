"""Masked diffusion process: schedules, forward masking, and the NELBO against exact entropy."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm.processes.masked import MaskedProcess
from dlm.processes.schedules import KINDS, MaskingSchedule
from toy_joint import CODES, LENGTH, MASK, VOCAB, conditional_table, joint

jax.config.update("jax_enable_x64", False)


@pytest.mark.parametrize("kind", KINDS)
def test_alpha_prime_matches_autodiff(kind):
  s = MaskingSchedule(kind, power=3.0)
  t = jnp.linspace(0.01, 0.99, 23)
  np.testing.assert_allclose(s.alpha_prime(t), jax.vmap(jax.grad(s.alpha))(t), rtol=1e-5,
                             atol=1e-6)
  alpha = s.alpha(t)
  assert (jnp.diff(alpha) < 0).all() and (alpha > 0).all() and (alpha <= 1).all()
  assert (s.weight(t) > 0).all()


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_forward_masking_rate(kind):
  process = MaskedProcess(MaskingSchedule(kind), mask_id=7, vocab_size=8)
  x = jnp.zeros((4, 50_000), jnp.int32)
  t = jnp.array([0.1, 0.4, 0.7, 0.95])[:, None] * jnp.ones_like(x, jnp.float32)
  scored = jnp.ones_like(x, bool).at[:, :100].set(False)
  z = process.forward_sample(jax.random.PRNGKey(0), x, t, scored)
  rate = (z[:, 100:] == 7).mean(axis=1)
  np.testing.assert_allclose(rate, 1 - process.schedule.alpha(t[:, 0]), atol=0.01)
  assert (z[:, :100] == 0).all()  # time-0 (prompt) tokens are never masked


def _toy():
  return joint(seed=0, concentration=0.5)


def _exact_conditionals(seqs, p):
  return conditional_table(seqs, p)


def _mc_nelbo(process, log_p_fn, seqs, p, n=1_000_000, seed=0):
  rng = jax.random.PRNGKey(seed)
  k_x, k_z = jax.random.split(rng)
  x = jnp.asarray(seqs)[jax.random.choice(k_x, len(seqs), (n,), p=jnp.asarray(p))]
  scored = jnp.ones_like(x, bool)
  z, row_t = process.sample(k_z, x, scored)
  t = jnp.broadcast_to(row_t[:, None], x.shape)
  log_p_x = log_p_fn(z, x)
  per_seq = process.nelbo(log_p_x, z, t, scored).sum(axis=1)
  return float(per_seq.mean()), float(per_seq.std() / math.sqrt(n))


def _exact_log_p(table):
  def fn(z, x):
    logp = table[(z * CODES).sum(axis=1)]  # (n, LENGTH, VOCAB + 1)
    return jnp.take_along_axis(logp, x[..., None], axis=-1)[..., 0]

  return fn


@pytest.mark.parametrize("kind", ["linear", "cosine", "loglinear"])
def test_continuous_nelbo_is_tight_with_exact_conditionals(kind):
  seqs, p = _toy()
  entropy = float(-(p * np.log(p)).sum())
  process = MaskedProcess(MaskingSchedule(kind), mask_id=MASK, vocab_size=VOCAB + 1)
  mean, se = _mc_nelbo(process, _exact_log_p(_exact_conditionals(seqs, p)), seqs, p)
  assert abs(mean - entropy) < 4 * se + 2e-3, (mean, se, entropy)


def test_nelbo_is_loose_for_a_wrong_denoiser_and_for_discrete_time():
  seqs, p = _toy()
  entropy = float(-(p * np.log(p)).sum())
  table = _exact_conditionals(seqs, p)
  uniform = lambda z, x: jnp.full(x.shape, -math.log(VOCAB))  # noqa: E731
  process = MaskedProcess(MaskingSchedule("linear"), mask_id=MASK, vocab_size=VOCAB + 1)
  mean, se = _mc_nelbo(process, uniform, seqs, p)
  assert mean > entropy + 0.2 and abs(mean - LENGTH * math.log(VOCAB)) < 4 * se + 2e-3
  gaps = []
  for steps in (2, 8, 64):
    discrete = MaskedProcess(MaskingSchedule("linear"), mask_id=MASK, vocab_size=VOCAB + 1,
                             timesteps=steps)
    mean, se = _mc_nelbo(discrete, _exact_log_p(table), seqs, p)
    gaps.append(mean - entropy)
    assert mean > entropy - 4 * se
  assert gaps[0] > gaps[1] > gaps[2] - 0.01 and gaps[0] > 0.05  # finer steps, tighter bound


@pytest.mark.parametrize("kind", ["linear", "cosine", "loglinear"])
def test_count_masking_is_the_same_bound_with_bounded_weights(kind):
  """Masks drawn by count (k uniform on 1..L, weight L / k): tight with exact conditionals,
  the same expectation as the time form for a wrong denoiser (up to the time form's eps
  terms), and a smaller variance."""
  seqs, p = _toy()
  entropy = float(-(p * np.log(p)).sum())
  counted = MaskedProcess(MaskingSchedule(kind), mask_id=MASK, vocab_size=VOCAB + 1,
                          masking="count")
  mean, se = _mc_nelbo(counted, _exact_log_p(_exact_conditionals(seqs, p)), seqs, p)
  assert abs(mean - entropy) < 4 * se + 1e-3, (mean, se, entropy)
  wrong = _exact_log_p(_exact_conditionals(*joint(seed=1, concentration=0.5)))
  timed = MaskedProcess(MaskingSchedule(kind), mask_id=MASK, vocab_size=VOCAB + 1)
  mean_c, se_c = _mc_nelbo(counted, wrong, seqs, p, seed=1)
  mean_t, se_t = _mc_nelbo(timed, wrong, seqs, p, seed=2)
  assert mean_c > entropy + 0.1  # a wrong denoiser's bound is loose
  assert abs(mean_c - mean_t) < 4 * math.hypot(se_c, se_t) + 2e-3, (mean_c, mean_t)
  assert se_c < se_t
  # The time it shows the network is the schedule's time of the masked fraction.
  fractions = jnp.array([1 / 3, 2 / 3, 1.0])
  np.testing.assert_allclose(
      counted.schedule.masked_fraction(counted.schedule.time_of(fractions)), fractions,
      rtol=1e-5)
  z, row_t = counted.sample(jax.random.PRNGKey(0), jnp.zeros((6, 8), jnp.int32),
                            jnp.arange(8)[None, :] < jnp.array([[8], [8], [5], [5], [1], [0]]))
  counts = (z == MASK).sum(axis=1)
  assert (z[:, 5:][2:4] != MASK).all() and int(counts[5]) == 0  # only scored tokens
  lengths = jnp.array([8, 8, 5, 5, 1, 1])
  np.testing.assert_allclose(counted.schedule.masked_fraction(row_t), counts / lengths,
                             rtol=1e-5)


def test_parameterisation():
  process = MaskedProcess(MaskingSchedule("linear"), mask_id=3, vocab_size=4)
  logits = jax.random.normal(jax.random.PRNGKey(0), (1, 2, 4))
  z = jnp.array([[3, 1]])
  lp = process.log_probs(logits, z)
  assert lp[0, 0, 3] == -jnp.inf  # zero-masking: never predicts [MASK]
  np.testing.assert_allclose(jnp.exp(lp[0, 0]).sum(), 1.0, rtol=1e-6)
  assert lp[0, 1, 1] == 0.0 and jnp.isneginf(lp[0, 1, [0, 2, 3]]).all()  # carry-over
