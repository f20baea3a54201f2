"""NeoDiff's non-simultaneous (Poisson) time process against its definition."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import poisson

from dlm.errors import DlmError
from dlm.processes import nonsim
from dlm.processes.nonsim import PoissonProcess

jax.config.update("jax_enable_x64", False)

TAU_MAX = 99


def _map(n, t):
  """The official process_tau in float64 numpy (constant_same: lambda = f = 2 tau_max t)."""
  lam = 2.0 * TAU_MAX * t
  x = (n - lam) / (np.sqrt(lam) + 1e-8) * (2.0 * TAU_MAX * t) + lam
  return np.clip(np.round(x), 0, TAU_MAX)


def _exact_moments(t):
  lam = 2.0 * TAU_MAX * t
  n = np.arange(int(lam + 20 * np.sqrt(lam) + 50))
  p = poisson.pmf(n, lam)
  tau = _map(n, np.float32(t).astype(np.float64))
  mean = (p * tau).sum()
  return mean, (p * (tau - mean) ** 2).sum()


def test_count_map_matches_the_official_formula():
  proc = PoissonProcess()
  n = np.arange(400)
  for t in (0.0, 0.013, 0.25, 0.5, 0.77, 1.0):
    got = proc.tau_from_count(jnp.asarray(n), jnp.float32(t))
    np.testing.assert_array_equal(got, _map(n, np.float64(np.float32(t))))
  assert proc.tau_max == TAU_MAX
  np.testing.assert_allclose(proc.intensity(0.5), 99.0)
  np.testing.assert_allclose(proc.spread(0.25), 49.5)
  np.testing.assert_allclose(proc.token_time(jnp.array([0, 33, 99])), [0.0, 1 / 3, 1.0])


def test_intrinsic_time_distribution_matches_its_definition():
  proc = PoissonProcess()
  ts = np.array([0.0, 0.004, 0.02, 0.1, 0.3, 0.5, 0.8, 0.99], np.float32)
  n = 40_000
  tau = proc.sample_intrinsic(jax.random.PRNGKey(0), jnp.asarray(ts), (len(ts), n))
  assert tau.dtype == jnp.int32 and (tau >= 0).all() and (tau <= TAU_MAX).all()
  tau = np.asarray(tau, np.float64)
  assert (tau[0] == 0).all()  # lambda = 0 at t = 0
  for row, t in enumerate(ts[1:], start=1):
    mean, var = _exact_moments(float(t))
    se = np.sqrt(var / n) + 1e-9
    assert abs(tau[row].mean() - mean) < 5 * se + 1e-3, (t, tau[row].mean(), mean)
    np.testing.assert_allclose(tau[row].var(), var, rtol=0.05, atol=1e-3)


def test_high_t_quirk():
  t = jnp.array([0.5, 0.995, 0.999])
  tau = PoissonProcess().sample_intrinsic(jax.random.PRNGKey(1), t, (3, 2000))
  assert (tau[1:] == 1).all()  # official `taus[ts > 0.99] = 1`: almost clean
  assert (tau[0] != 1).any()
  off = PoissonProcess(high_t_quirk=False).sample_intrinsic(jax.random.PRNGKey(1), t, (3, 2000))
  mean, _ = _exact_moments(0.999)
  assert abs(float(off[2].mean()) - mean) < 2.0 and mean > 60


@pytest.mark.parametrize("length", [1, 7, 40])
def test_quantile_taus_are_the_mapped_poisson_quantiles(length):
  proc = PoissonProcess()
  ts = np.linspace(0.0, 1.0, 41).astype(np.float32)
  got = np.asarray(proc.poisson_quantile_taus(jnp.asarray(ts), length))
  q = ((np.arange(length) + 0.5) / length).astype(np.float32)  # float32 as the official code
  lam = 2.0 * TAU_MAX * ts.astype(np.float64)
  ref = _map(poisson.ppf(q[None], lam[:, None]), ts.astype(np.float64)[:, None])
  np.testing.assert_array_equal(got, ref)
  assert (np.diff(got, axis=1) >= 0).all()


def test_quantile_taus_with_a_valid_mask():
  proc = PoissonProcess()
  t = jnp.array([0.3, 0.6, 0.9])
  valid = jnp.arange(10)[None, :] < jnp.array([[10], [4], [0]])
  got = np.asarray(proc.poisson_quantile_taus(t, 10, valid))
  np.testing.assert_array_equal(got[1, :4], proc.poisson_quantile_taus(t[1:2], 4)[0])
  assert (got[1, 4:] == TAU_MAX).all() and (got[2] == TAU_MAX).all()
  assert (np.diff(got, axis=1) >= 0).all()


def test_rank_labels_order_tokens_by_loss():
  proc = PoissonProcess()
  t = jnp.array([0.4, 0.4])
  loss = jnp.array([[0.5, 0.1, 0.9, 0.3, 7.0, 0.2],
                    [0.3, 0.3, -1.0, 0.3, 9.0, jnp.inf]])
  valid = jnp.array([[1, 1, 1, 1, 0, 1], [1, 1, 1, 1, 0, 1]], bool)
  rank_labels = jax.jit(proc.rank_labels)  # jit-able
  labels = np.asarray(rank_labels(loss, t, valid))
  ref = np.asarray(proc.poisson_quantile_taus(t[:1], 5))[0]  # 5 valid tokens per row
  # Row 0: losses of valid tokens 0.5, 0.1, 0.9, 0.3, 0.2 -> ranks 3, 0, 4, 2, 1.
  np.testing.assert_array_equal(labels[0], [ref[3], ref[0], ref[4], ref[2], 0, ref[1]])
  # Row 1: ties (0.3 x 3) keep position order; an inf-loss valid token ranks after them and
  # before nothing invalid.
  np.testing.assert_array_equal(labels[1], [ref[1], ref[2], ref[0], ref[3], 0, ref[4]])
  assert labels.dtype == np.int32
  # The invalid token's loss does not matter; without ties labels follow the tokens under a
  # permutation.
  again = rank_labels(loss.at[0, 4].set(-5.0), t, valid)
  np.testing.assert_array_equal(again, labels)
  perm = jnp.array([5, 3, 1, 0, 4, 2])
  np.testing.assert_array_equal(proc.rank_labels(loss[:1, perm], t[:1], valid[:1, perm])[0],
                                labels[0, perm])


def test_rank_labels_lowest_loss_gets_smallest_tau():
  proc = PoissonProcess()
  loss = jax.random.uniform(jax.random.PRNGKey(0), (4, 64))
  valid = jnp.arange(64)[None] < jnp.array([[64], [50], [13], [1]])
  rank_labels = jax.jit(proc.rank_labels)
  labels = rank_labels(loss, jnp.array([0.2, 0.5, 0.7, 0.9]), valid)
  for b in range(4):
    v = np.asarray(valid[b])
    order = np.argsort(np.asarray(loss[b])[v], kind="stable")
    assert (np.diff(np.asarray(labels[b])[v][order]) >= 0).all()
  assert (labels[~valid] == 0).all()
  assert (rank_labels(loss, jnp.zeros(4), valid) == 0).all()  # t = 0: all clean


def test_extrinsic_grid_and_schedule_files(tmp_path):
  grid = nonsim.extrinsic_grid(4)
  np.testing.assert_allclose(grid, [1.0, 0.75, 0.5, 0.25, 0.0])
  path = str(tmp_path / "sched.json")
  times = [1.0, 0.8, 0.61, 0.3, 0.05, 0.0]
  nonsim.save_schedule(path, times)
  np.testing.assert_array_equal(nonsim.load_schedule(path), times)
  with open(path, "w") as f:
    json.dump({"times": times}, f)
  np.testing.assert_array_equal(nonsim.load_schedule(path), times)
  np.testing.assert_allclose(nonsim.from_custom_timesteps("0.2,0.9,0.05,0.5"),
                             [1.0, 0.9, 0.5, 0.2, 0.0])


@pytest.mark.parametrize("content", [
    "not json", "[]", "[1.0]", '{"t": [1, 0]}', '"1,0"', "[1.0, 0.5, 0.7, 0.0]",
    "[1.0, 0.5, 0.5, 0.0]", "[1.0, 0.5, 0.1]", "[1.5, 0.5, 0.0]", "[1.0, -0.5, 0.0]",
    '[1.0, "0.5", 0.0]', "[true, 0.0]", "[1.0, NaN, 0.0]", "[[1.0, 0.0]]",
])
def test_bad_schedule_files_raise(tmp_path, content):
  path = tmp_path / "bad.json"
  path.write_text(content)
  with pytest.raises(DlmError):
    nonsim.load_schedule(str(path))


def test_bad_schedules_raise(tmp_path):
  with pytest.raises(DlmError, match="does not exist"):
    nonsim.load_schedule(str(tmp_path / "missing.json"))
  with pytest.raises(DlmError):
    nonsim.save_schedule(str(tmp_path / "s.json"), [0.5, 0.6, 0.0])
  assert not (tmp_path / "s.json").exists()
  with pytest.raises(DlmError):
    nonsim.extrinsic_grid(0)
  with pytest.raises(DlmError):
    nonsim.from_custom_timesteps("0.5,1.5")
