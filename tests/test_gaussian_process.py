"""Gaussian VP process: schedules, forward moments, reverse steps against closed forms."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm.errors import DlmError
from dlm.processes import gaussian
from dlm.processes.gaussian import NAMES, GaussianSchedule

jax.config.update("jax_enable_x64", False)

ENDPOINTS = {  # alpha_bar(0), alpha_bar(1)
    "cosine": (1.0, 1e-8),
    "sqrt": (0.99, 1e-8),
    "tan_d": (1.0, 0.0),
    "linear": (1.0, 1e-8),
}


def _times(batch, length, lo=0.05, hi=0.95, seed=0):
  return jax.random.uniform(jax.random.PRNGKey(seed), (batch, length), minval=lo, maxval=hi)


@pytest.mark.parametrize("name", NAMES)
def test_schedule_identities(name):
  sch = GaussianSchedule(name)
  t = jnp.linspace(0.0, 1.0, 201)
  a, s, ab = sch.alpha(t), sch.sigma(t), sch.alpha_bar(t)
  assert jnp.isfinite(a).all() and jnp.isfinite(s).all()
  np.testing.assert_allclose(a**2 + s**2, 1.0, atol=2e-6)
  np.testing.assert_allclose(a**2, ab, rtol=1e-5, atol=1e-12)
  assert (jnp.diff(a) <= 0).all() and (jnp.diff(a[1:-1]) < 0).all()
  ab0, ab1 = ENDPOINTS[name]
  np.testing.assert_allclose(ab[0], ab0, rtol=1e-6)
  np.testing.assert_allclose(ab[-1], ab1, rtol=1e-3, atol=1e-12)


def test_schedule_closed_forms():
  t = jnp.array([0.1, 0.5, 0.9])
  np.testing.assert_allclose(GaussianSchedule("tan_d", d=5.0).alpha(t),
                             1 / np.sqrt(1 + 25 * np.tan(np.pi * np.array(t) / 2) ** 2), rtol=1e-5)
  u = (np.array(t) + 0.008) / 1.008 * np.pi / 2
  np.testing.assert_allclose(GaussianSchedule("cosine").alpha_bar(t),
                             np.cos(u) ** 2 / np.cos(0.008 / 1.008 * np.pi / 2) ** 2, rtol=1e-5)
  np.testing.assert_allclose(GaussianSchedule("sqrt").alpha_bar(t), 1 - np.sqrt(np.array(t) + 1e-4),
                             rtol=1e-5)
  assert GaussianSchedule("tan_d").alpha(jnp.ones(())) == 0.0
  with pytest.raises(DlmError):
    GaussianSchedule("nope")


@pytest.mark.parametrize("name", NAMES)
def test_beta_is_minus_dlog_alpha_bar(name):
  sch = GaussianSchedule(name)
  t = jnp.linspace(0.02, 0.94, 37)
  auto = -jax.vmap(jax.grad(lambda x: jnp.log(sch.alpha_bar(x))))(t)
  np.testing.assert_allclose(sch.beta(t), auto, rtol=2e-3)
  assert jnp.isfinite(sch.beta(jnp.ones(()))) and sch.beta(jnp.ones(())) == sch.beta(0.95)


@pytest.mark.parametrize("name", NAMES)
def test_forward_moments_and_clean_tokens(name):
  sch = GaussianSchedule(name)
  batch, length, dim = 2, 5, 40_000
  x0 = jax.random.normal(jax.random.PRNGKey(1), (batch, length, dim))
  t = _times(batch, length).at[:, 0].set(0.0).at[1, 3].set(1.0)
  z = gaussian.forward_sample(jax.random.PRNGKey(2), x0, t, sch, noise_scale=2.0)
  assert (z[:, 0] == x0[:, 0]).all()  # t == 0 tokens are exactly clean
  resid = z - sch.alpha(t)[..., None] * x0
  np.testing.assert_allclose(resid.mean(-1), 0.0, atol=0.04)
  np.testing.assert_allclose(resid.var(-1)[:, 1:], (4.0 * sch.sigma(t) ** 2)[:, 1:], rtol=0.03)
  # A given noise replaces the draw; renoise is the forward sample at the new time.
  eps = jax.random.normal(jax.random.PRNGKey(3), x0.shape)
  z1 = gaussian.forward_sample(None, x0, t, sch, noise=eps)
  np.testing.assert_allclose(z1[:, 1:], (sch.alpha(t)[..., None] * x0 + sch.sigma(t)[..., None]
                                         * eps)[:, 1:], atol=1e-5)
  assert (gaussian.renoise(None, x0, t, sch, noise=eps) == z1).all()
  # NeoDiff's Scheduler.forward noises t == 0 at alpha_bar(0) too (sqrt: 0.99).
  z0 = gaussian.forward_sample(None, x0, jnp.zeros_like(t), sch, noise=eps, exact_at_zero=False)
  np.testing.assert_allclose(z0, sch.alpha(0.0) * x0 + sch.sigma(0.0) * eps, atol=1e-5)


def test_x0_mse():
  x0 = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 4))
  assert (gaussian.x0_mse(x0, x0, jnp.ones((2, 3))) == 0).all()
  x0_hat = x0 + 0.5
  np.testing.assert_allclose(gaussian.x0_mse(x0_hat, x0), 1.0, rtol=1e-6)  # 4 * 0.25
  np.testing.assert_allclose(gaussian.x0_mse(x0_hat, x0, mean_over_dim=True), 0.25, rtol=1e-6)
  w = jnp.array([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]])
  np.testing.assert_allclose(gaussian.x0_mse(x0_hat, x0, w), w, rtol=1e-6)


def _steps(sch, z, x0_hat, t, s):
  k = jax.random.PRNGKey(9)
  return {
      "ddpm": gaussian.ddpm_step(k, z, x0_hat, t, s, sch),
      "ddim": gaussian.ddim_step(z, x0_hat, t, s, sch),
      "ddim_eta1": gaussian.ddim_step(z, x0_hat, t, s, sch, eta=1.0, rng=k),
      "euler_ode": gaussian.euler_step(k, z, x0_hat, t, s, sch, sde=False),
      "euler_sde": gaussian.euler_step(k, z, x0_hat, t, s, sch, sde=True),
      "renoise": gaussian.renoise(k, x0_hat, s, sch),
  }


@pytest.mark.parametrize("name", NAMES)
def test_reverse_steps_keep_time_zero_tokens_and_stay_finite(name):
  sch = GaussianSchedule(name)
  x0 = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 8))
  t = _times(2, 6).at[:, 0].set(0.0).at[:, 1].set(1.0)
  s = (t * 0.7).at[:, 2].set(0.0)
  z = jnp.where((t == 0)[..., None], x0, jax.random.normal(jax.random.PRNGKey(1), x0.shape))
  x0_hat = x0 + 0.1
  for kind, out in _steps(sch, z, x0_hat, t, s).items():
    assert jnp.isfinite(out).all(), kind
    if kind != "renoise":  # renoise sees only x0_hat: at s == 0 it returns it
      assert (out[:, 0] == z[:, 0]).all(), kind  # t == 0: unchanged
    if kind in ("ddpm", "ddim", "ddim_eta1", "renoise"):
      assert (out[:, 2] == x0_hat[:, 2]).all(), kind  # s == 0: the estimate


@pytest.mark.parametrize("name", NAMES)
def test_ddim_with_exact_x0_follows_the_marginal_path(name):
  sch = GaussianSchedule(name)
  x0 = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 16))
  eps = jax.random.normal(jax.random.PRNGKey(1), x0.shape)
  t = _times(2, 5, 0.3, 1.0)
  s = t * jnp.linspace(0.0, 0.9, 5)
  z_t = gaussian.forward_sample(None, x0, t, sch, noise=eps)
  z_s = gaussian.ddim_step(z_t, x0, t, s, sch)
  assert (z_s == gaussian.ddim_step(z_t, x0, t, s, sch)).all()  # deterministic
  expect = sch.alpha(s)[..., None] * x0 + sch.sigma(s)[..., None] * eps
  np.testing.assert_allclose(z_s[:, 1:], expect[:, 1:], atol=2e-4)
  np.testing.assert_array_equal(z_s[:, 0], x0[:, 0])  # reaches x0 at s = 0 (even for sqrt,
  # whose alpha_bar(0) = 0.99: the last step returns the estimate)


@pytest.mark.parametrize("name", NAMES)
def test_ddpm_posterior_matches_closed_form(name):
  sch = GaussianSchedule(name)
  t = jnp.array([[0.3, 0.6, 0.9, 1.0]])
  s = jnp.array([[0.1, 0.5, 0.2, 0.7]])
  z_t = jax.random.normal(jax.random.PRNGKey(0), (1, 4, 3))
  x0 = jax.random.normal(jax.random.PRNGKey(1), (1, 4, 3))
  mean, var = gaussian.posterior(z_t, x0, t, s, sch)
  ab_t = np.asarray(sch.alpha_bar(t), np.float64)
  ab_s = np.asarray(sch.alpha_bar(s), np.float64)
  a_ts2 = ab_t / ab_s
  var_ts = 1 - ab_t - a_ts2 * (1 - ab_s)  # sigma_t^2 - alpha_{t|s}^2 sigma_s^2
  ref_mean = (np.sqrt(a_ts2) * (1 - ab_s) / (1 - ab_t))[..., None] * np.asarray(z_t) + (
      np.sqrt(ab_s) * var_ts / (1 - ab_t))[..., None] * np.asarray(x0)
  np.testing.assert_allclose(mean, ref_mean, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(var, var_ts * (1 - ab_s) / (1 - ab_t), rtol=1e-4, atol=1e-7)
  # Samples of ddpm_step and of ddim with eta = 1 have the posterior moments.
  n = 20_000
  zb, xb = jnp.broadcast_to(z_t[:, :, :1], (1, 4, n)), jnp.broadcast_to(x0[:, :, :1], (1, 4, n))
  for out in (gaussian.ddpm_step(jax.random.PRNGKey(2), zb, xb, t, s, sch),
              gaussian.ddim_step(zb, xb, t, s, sch, eta=1.0, rng=jax.random.PRNGKey(3))):
    np.testing.assert_allclose(out.mean(-1), mean[..., 0], atol=0.03)
    np.testing.assert_allclose(out.var(-1), var, rtol=0.05, atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_euler_ode_with_perfect_predictor_moves_toward_the_point_mass(name):
  sch = GaussianSchedule(name)
  x0 = jnp.full((1, 2, 64), 1.5)
  eps = jax.random.normal(jax.random.PRNGKey(0), x0.shape)
  grid = jnp.linspace(0.9, 0.05, 401)
  z = gaussian.forward_sample(None, x0, jnp.full((1, 2), grid[0]), sch, noise=eps)
  step = jax.jit(gaussian.euler_step, static_argnames=("schedule", "sde"))
  dist = [float(jnp.linalg.norm(z - x0))]
  for k in range(len(grid) - 1):
    t, s = jnp.full((1, 2), grid[k]), jnp.full((1, 2), grid[k + 1])
    z = step(None, z, x0, t, s, schedule=sch, sde=False)
    dist.append(float(jnp.linalg.norm(z - x0)))
  assert all(b < a for a, b in zip(dist, dist[1:]))
  # The exact flow of a point mass keeps eps: z_s = alpha_s x0 + sigma_s eps.
  expect = sch.alpha(grid[-1]) * x0 + sch.sigma(grid[-1]) * eps
  assert float(jnp.linalg.norm(z - expect)) < 0.05 * dist[0]


def test_euler_sde_mean_matches_cosmos_x_mean():
  sch = GaussianSchedule("tan_d")
  x0 = jnp.ones((1, 2, 20_000))
  t, s = jnp.full((1, 2), 0.6), jnp.full((1, 2), 0.55)
  z = gaussian.forward_sample(jax.random.PRNGKey(0), x0, t, sch)
  mean = gaussian.euler_step(None, z, x0, t, s, sch, sde=True, add_noise=False)
  beta = float(sch.beta(0.6))
  score = -(z - sch.alpha(0.6) * x0) / sch.sigma(0.6) ** 2
  np.testing.assert_allclose(mean, z + (0.5 * beta * z + beta * score) * 0.05, rtol=1e-4,
                             atol=1e-4)
  out = gaussian.euler_step(jax.random.PRNGKey(1), z, x0, t, s, sch, sde=True)
  np.testing.assert_allclose((out - mean).var(-1), beta * 0.05, rtol=0.05)
  assert math.isfinite(float(sch.beta(1.0)))
