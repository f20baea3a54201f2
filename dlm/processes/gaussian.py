"""Gaussian variance-preserving (VP) diffusion over continuous vectors (token embeddings).

Forward process (Ho et al. 2020 eq. 4; Kingma et al. 2021 "VDM" eq. 1):
  q(z_t | x0) = N(alpha(t) x0, sigma(t)^2 I),  alpha^2 + sigma^2 = 1,
with a PER-TOKEN time t of shape (batch, length) in [0, 1] (0 clean, 1 pure noise). Tokens at
t == 0 (clean prompt or source tokens) are returned exactly as given by every function here.

Schedules, as alpha_bar(t) = alpha(t)^2 (the signal variance):
  cosine  Nichol & Dhariwal 2021 eq. 17: cos^2((t + s)/(1 + s) pi/2) / cos^2(s/(1 + s) pi/2),
          s = 0.008, floored at 1e-8 (alpha(0) = 1 exactly).
  sqrt    Li et al. 2022 "Diffusion-LM" §4.2 and NeoDiff's `scheduler.py::get_noise_schedule`:
          1 - sqrt(t + s), s = 1e-4, floored at 1e-8. As in the papers alpha_bar(0) = 0.99, so a
          token at t > 0 but near 0 still carries noise of std ~0.1 x noise_scale; only t == 0
          exactly is left clean here.
  tan_d   Cosmos (Meshchaninov et al. 2025, official `schedulers.py::Tanh`):
          alpha = 1 / sqrt(1 + d^2 tan^2(pi t / 2)), d = 5; written with cos/sin so that
          alpha(0) = 1 and alpha(1) = 0 exactly (no tan overflow, no NaN).
  linear  1 - t (clipped to [1e-8, 1]). Not score-SDE's "linear beta" VP schedule.

Reverse steps take an x0 estimate (x0-prediction parameterisation) and a per-token next time
s < t: `ddpm_step` (posterior q(z_s | z_t, x0_hat), Kingma et al. 2021 eq. 33-34), `ddim_step`
(Song et al. 2021 eq. 12), `euler_step` (Song et al. 2021 "score SDE" eq. 6 and 13, VP-SDE,
Euler / Euler-Maruyama as Cosmos' `EulerDiffEqSolver`), `renoise` (NeoDiff's x0 re-noising).
"""

from __future__ import annotations

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp

from dlm.errors import DlmError

NAMES = ("cosine", "sqrt", "tan_d", "linear")
_COSINE_SHIFT = 0.008
_SQRT_SHIFT = 1e-4


@dataclasses.dataclass(frozen=True)
class GaussianSchedule:
  name: str = "cosine"
  d: float = 5.0  # tan_d only: the Cosmos shift (5 for N=16/32 latents, 7 for N=64)
  min_alpha_bar: float = 1e-8  # floor of cosine, sqrt and linear (NeoDiff's clamp)
  beta_clip: float = 0.95  # Euler steps use beta(min(t, beta_clip)): Cosmos' `Tanh.t_thr`

  def __post_init__(self):
    if self.name not in NAMES:
      raise DlmError(f"unknown Gaussian schedule {self.name!r}; expected one of {NAMES}")
    if self.name == "tan_d" and not self.d > 0:
      raise DlmError(f"tan_d schedule needs d > 0, got {self.d}")

  def _parts(self, t):
    """(alpha_bar, 1 - alpha_bar), the second computed without cancellation near t = 0."""
    t = jnp.asarray(t, jnp.float32)
    if self.name == "cosine":
      u0 = _COSINE_SHIFT / (1.0 + _COSINE_SHIFT) * math.pi / 2.0
      u = (t + _COSINE_SHIFT) / (1.0 + _COSINE_SHIFT) * math.pi / 2.0
      c0 = math.cos(u0) ** 2
      ab = jnp.cos(u) ** 2 / c0
      one_minus = jnp.sin(u - u0) * jnp.sin(u + u0) / c0  # cos^2 u0 - cos^2 u = sin(u-u0)sin(u+u0)
    elif self.name == "sqrt":
      r = jnp.sqrt(t + _SQRT_SHIFT)
      ab, one_minus = 1.0 - r, r
    elif self.name == "tan_d":
      c = jnp.maximum(jnp.cos(math.pi / 2.0 * t), 0.0)  # cos(pi/2) is -4e-8 in float32
      sn = jnp.sin(math.pi / 2.0 * t)
      den = c * c + self.d**2 * sn * sn
      return c * c / den, self.d**2 * sn * sn / den
    else:  # linear
      ab, one_minus = 1.0 - t, t
    ab = jnp.clip(ab, self.min_alpha_bar, 1.0)
    one_minus = jnp.clip(one_minus, 0.0, 1.0 - self.min_alpha_bar)
    return ab, one_minus

  def alpha_bar(self, t):
    """Signal variance alpha(t)^2, decreasing from ~1 at t = 0 to ~0 at t = 1."""
    return self._parts(t)[0]

  def alpha(self, t):
    return jnp.sqrt(self.alpha_bar(t))

  def sigma(self, t):
    """Noise std sqrt(1 - alpha_bar), accurate near t = 0."""
    return jnp.sqrt(self._parts(t)[1])

  def beta(self, t):
    """VP-SDE rate beta(t) = -d log alpha_bar / dt (closed forms), evaluated at min(t, beta_clip);
    the drift is f = -beta z / 2 and g^2 = beta (Song et al. 2021 eq. 11 in continuous time)."""
    t = jnp.minimum(jnp.asarray(t, jnp.float32), self.beta_clip)
    if self.name == "cosine":
      u = (t + _COSINE_SHIFT) / (1.0 + _COSINE_SHIFT) * math.pi / 2.0
      raw = math.pi / (1.0 + _COSINE_SHIFT) * jnp.tan(u)
    elif self.name == "sqrt":
      r = jnp.sqrt(t + _SQRT_SHIFT)
      raw = 1.0 / (2.0 * r * (1.0 - r))
    elif self.name == "tan_d":  # Cosmos: pi d^2 tan (1 + tan^2) / (1 + d^2 tan^2)
      c, sn = jnp.cos(math.pi / 2.0 * t), jnp.sin(math.pi / 2.0 * t)
      return math.pi * self.d**2 * sn / (c * (c * c + self.d**2 * sn * sn))
    else:
      raw = 1.0 / (1.0 - t)
    # Where the floor of alpha_bar is active, alpha_bar is constant: beta = 0.
    return jnp.where(self._parts(t)[0] > self.min_alpha_bar, raw, 0.0)


def _check(x, t):
  chex.assert_rank(x, 3)
  chex.assert_shape(t, x.shape[:2])


def _safe(v):
  """Denominator guard for t == 0 (sigma = 0); those tokens are overwritten by the caller."""
  return jnp.where(v > 0, v, 1.0)


def forward_sample(rng, x0, t, schedule: GaussianSchedule, noise_scale: float = 1.0, *,
                   noise=None, exact_at_zero: bool = True) -> jax.Array:
  """z_t = alpha(t) x0 + sigma(t) noise_scale eps, eps ~ N(0, I) (Ho et al. 2020 eq. 4).

  x0 (batch, length, dim), t (batch, length). `noise` (same shape as x0) replaces the draw from
  `rng`. Tokens with t == 0 are returned exactly as x0 unless `exact_at_zero=False`, which noises
  them at alpha_bar(0) like NeoDiff's `Scheduler.forward` (sqrt schedule: alpha_bar(0) = 0.99).
  """
  _check(x0, t)
  if noise is None:
    noise = jax.random.normal(rng, x0.shape, jnp.float32)
  chex.assert_equal_shape((x0, noise))
  ab, one_minus = schedule._parts(t)
  z = jnp.sqrt(ab)[..., None] * x0 + (jnp.sqrt(one_minus) * noise_scale)[..., None] * noise
  z = z.astype(x0.dtype)
  return jnp.where((t == 0)[..., None], x0, z) if exact_at_zero else z


def renoise(rng, x0_hat, s, schedule: GaussianSchedule, noise_scale: float = 1.0, *,
            noise=None, exact_at_zero: bool = True) -> jax.Array:
  """NeoDiff's x0 re-noising step (official `NonSimScheduler.reverse` -> `Scheduler.forward`):
  a fresh forward sample of the estimate x0_hat at each token's new time s."""
  return forward_sample(rng, x0_hat, s, schedule, noise_scale, noise=noise,
                        exact_at_zero=exact_at_zero)


def x0_mse(x0_hat, x0, weights=None, *, mean_over_dim: bool = False) -> jax.Array:
  """Per-token x0 regression loss, shape (batch, length): weights * sum_d (x0_hat - x0)^2
  (Diffusion-LM eq. 2's L_simple in x0 form; Cosmos' unweighted x0 MSE). `mean_over_dim` averages
  over dim instead, as NeoDiff's `diffusion_loss = (x_0_hat - x_0).square().mean(-1)`."""
  chex.assert_equal_shape((x0_hat, x0))
  chex.assert_rank(x0, 3)
  sq = jnp.square(x0_hat.astype(jnp.float32) - x0.astype(jnp.float32))
  per_token = sq.mean(-1) if mean_over_dim else sq.sum(-1)
  if weights is None:
    return per_token
  chex.assert_shape(weights, x0.shape[:2])
  return weights.astype(jnp.float32) * per_token


def posterior(z_t, x0_hat, t, s, schedule: GaussianSchedule):
  """Mean and variance (batch, length) of q(z_s | z_t, x0) for 0 <= s < t (Kingma et al. 2021
  eq. 33-34): with alpha_{t|s} = alpha_t / alpha_s and sigma_{t|s}^2 = 1 - alpha_bar_t /
  alpha_bar_s, mean = alpha_{t|s} sigma_s^2 / sigma_t^2 z_t + alpha_s sigma_{t|s}^2 / sigma_t^2 x0,
  var = sigma_{t|s}^2 sigma_s^2 / sigma_t^2."""
  _check(z_t, t)
  chex.assert_equal_shape((z_t, x0_hat))
  chex.assert_equal_shape((t, s))
  ab_t, om_t = schedule._parts(t)
  ab_s, om_s = schedule._parts(s)
  var_ts = jnp.clip(-jnp.expm1(jnp.log(ab_t) - jnp.log(ab_s)), 0.0, 1.0)
  inv_om_t = 1.0 / _safe(om_t)
  a_ts = jnp.sqrt(ab_t / ab_s)
  coef_z = a_ts * om_s * inv_om_t
  coef_x = jnp.sqrt(ab_s) * var_ts * inv_om_t
  mean = coef_z[..., None] * z_t + coef_x[..., None] * x0_hat
  var = var_ts * om_s * inv_om_t
  return mean, var


def _finish(z_new, z_t, x0_hat, t, s, at_zero_x0: bool):
  z_new = z_new.astype(z_t.dtype)
  if at_zero_x0:
    z_new = jnp.where((s == 0)[..., None], x0_hat.astype(z_t.dtype), z_new)
  return jnp.where((t == 0)[..., None], z_t, z_new)


def ddpm_step(rng, z_t, x0_hat, t, s, schedule: GaussianSchedule) -> jax.Array:
  """Ancestral step z_s ~ q(z_s | z_t, x0 = x0_hat) (Ho et al. 2020 eq. 6-7, Kingma et al. 2021
  eq. 33-34); x0_hat at s == 0, z_t unchanged where t == 0."""
  mean, var = posterior(z_t, x0_hat, t, s, schedule)
  eps = jax.random.normal(rng, z_t.shape, jnp.float32)
  return _finish(mean + jnp.sqrt(var)[..., None] * eps, z_t, x0_hat, t, s, True)


def ddim_step(z_t, x0_hat, t, s, schedule: GaussianSchedule, eta: float = 0.0, *,
              rng=None) -> jax.Array:
  """DDIM (Song et al. 2021 "DDIM" eq. 12 and 16): eps_hat = (z_t - alpha_t x0_hat) / sigma_t,
  z_s = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c eps, with
  c^2 = eta^2 sigma_s^2 / sigma_t^2 (1 - alpha_bar_t / alpha_bar_s). eta = 0 is deterministic;
  eta = 1 is the DDPM posterior. eta > 0 needs `rng`."""
  _check(z_t, t)
  chex.assert_equal_shape((z_t, x0_hat))
  chex.assert_equal_shape((t, s))
  ab_t, om_t = schedule._parts(t)
  ab_s, om_s = schedule._parts(s)
  sigma_t = jnp.sqrt(_safe(om_t))
  eps_hat = (z_t - jnp.sqrt(ab_t)[..., None] * x0_hat) / sigma_t[..., None]
  z_s = jnp.sqrt(ab_s)[..., None] * x0_hat
  if eta:
    if rng is None:
      raise ValueError("ddim_step with eta > 0 needs rng")
    var_ts = jnp.clip(-jnp.expm1(jnp.log(ab_t) - jnp.log(ab_s)), 0.0, 1.0)
    c2 = jnp.clip(eta**2 * om_s / _safe(om_t) * var_ts, 0.0, om_s)
    eps = jax.random.normal(rng, z_t.shape, jnp.float32)
    z_s = z_s + jnp.sqrt(om_s - c2)[..., None] * eps_hat + jnp.sqrt(c2)[..., None] * eps
  else:
    z_s = z_s + jnp.sqrt(om_s)[..., None] * eps_hat
  return _finish(z_s, z_t, x0_hat, t, s, True)


def euler_step(rng, z_t, x0_hat, t, s, schedule: GaussianSchedule, sde: bool, *,
               add_noise: bool = True) -> jax.Array:
  """One Euler step from t down to s of the VP reverse SDE (Song et al. 2021 eq. 6, 11) or of its
  probability-flow ODE (eq. 13), with the score from the x0 estimate,
  score = -(z - alpha_t x0_hat) / sigma_t^2 (Cosmos `reverse_params`), beta = schedule.beta(t):
    SDE: z_s = z_t + (beta z_t / 2 + beta score) (t - s) + sqrt(beta (t - s)) eps
    ODE: z_s = z_t + (beta z_t / 2 + beta score / 2) (t - s).
  `add_noise=False` (SDE) returns Cosmos' `x_mean`. z_t unchanged where t == 0; no x0 snap at s = 0
  (Cosmos stops at t_min = 0.05 and reads out the last x_mean)."""
  _check(z_t, t)
  chex.assert_equal_shape((z_t, x0_hat))
  chex.assert_equal_shape((t, s))
  ab_t, om_t = schedule._parts(t)
  beta = schedule.beta(t)[..., None]
  dt = (t - s)[..., None]
  score = -(z_t - jnp.sqrt(ab_t)[..., None] * x0_hat) / _safe(om_t)[..., None]
  weight = 1.0 if sde else 0.5
  z_s = z_t + (0.5 * beta * z_t + weight * beta * score) * dt
  if sde and add_noise:
    eps = jax.random.normal(rng, z_t.shape, jnp.float32)
    z_s = z_s + jnp.sqrt(beta * jnp.maximum(dt, 0.0)) * eps
  return _finish(z_s, z_t, x0_hat, t, s, False)
