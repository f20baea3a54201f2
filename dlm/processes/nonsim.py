"""NeoDiff's non-simultaneous time process (Li, Gao, Xu, ACL 2025, arXiv 2505.22165 §3.2-3.3).

Each sentence has an extrinsic time t in [0, 1]; each token an integer intrinsic time
tau in {0, ..., tau_max} (tau_max = num_tau - 1 = 99), its noise level being the Gaussian
schedule at token time tau / tau_max. This is the official `scheduler/nonsim.py::PoissonScheduler`
with `trans_schedule=constant_same` (the released IWSLT14 recipe):

  lambda(t) = 2 tau_max t   (Poisson intensity, `trans_lambda`)
  f(t)      = 2 tau_max t   (spread, `tau_factor`)
  n ~ Poisson(lambda(t)) per token,
  tau = clip(round((n - lambda) / (sqrt(lambda) + 1e-8) * f + lambda), 0, tau_max)
                                                                  (`process_tau`)

so tau is a standardised Poisson count rescaled to std f(t) around lambda(t) (at t = 0, lambda = 0
and tau = 0). Code quirk reproduced by default (`high_t_quirk`): `sample_taus` then sets
`taus[ts > 0.99] = 1`: tau = 1 (token time 1/99, almost clean) for every token of a sentence with
t > 0.99. It reads as a leftover from when taus were fractions in [0, 1] (1 = pure noise); with
integer taus it makes ~1% of training sentences nearly clean. It is not applied to the labels.

Time-predictor labels (`create_labels`): the valid tokens of a sentence, ranked by their current
loss (ascending), receive the Poisson(lambda(t)) quantiles at (r + 0.5) / n_valid, r = 0..n_valid-1,
mapped by the same standardise-round-clip map: the lowest-loss token gets the smallest tau.

Inference schedule: a decreasing list of extrinsic times from 1 to 0 (`extrinsic_grid`, or one
optimised by Bayesian optimisation, NeoDiff §3.5, stored with `save_schedule` / `load_schedule`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from dlm.errors import DlmError


@dataclasses.dataclass(frozen=True)
class PoissonProcess:
  num_tau: int = 100
  high_t_quirk: bool = True  # official `taus[ts > 0.99] = 1` in `sample_taus`

  def __post_init__(self):
    if self.num_tau < 2:
      raise DlmError(f"num_tau must be at least 2, got {self.num_tau}")

  @property
  def tau_max(self) -> int:
    return self.num_tau - 1

  def intensity(self, t):
    """lambda(t) = 2 tau_max t (`constant_same` `trans_lambda`)."""
    return 2.0 * self.tau_max * jnp.asarray(t, jnp.float32)

  def spread(self, t):
    """f(t) = 2 tau_max t (`constant_same` `tau_factor`)."""
    return 2.0 * self.tau_max * jnp.asarray(t, jnp.float32)

  def tau_from_count(self, n, t) -> jax.Array:
    """The standardise-rescale-round-clip map of `PoissonScheduler.process_tau` (count n,
    extrinsic time t broadcast against n) -> integer tau. round is half-to-even as torch.round."""
    lam = self.intensity(t)
    x = (jnp.asarray(n, jnp.float32) - lam) / (jnp.sqrt(lam) + 1e-8) * self.spread(t) + lam
    return jnp.clip(jnp.round(x), 0, self.tau_max).astype(jnp.int32)

  def sample_intrinsic(self, rng, t, shape) -> jax.Array:
    """Intrinsic times tau (int32, `shape` = (batch, length)) for extrinsic t of shape (batch,)
    (`PoissonScheduler.sample_taus`), including the t > 0.99 -> tau = 1 quirk if enabled."""
    t = jnp.asarray(t, jnp.float32)
    chex.assert_rank(t, 1)
    chex.assert_equal(len(shape), 2)
    chex.assert_equal(t.shape[0], shape[0])
    t_tok = jnp.broadcast_to(t[:, None], shape)
    n = jax.random.poisson(rng, self.intensity(t_tok), shape)
    tau = self.tau_from_count(n, t_tok)
    if self.high_t_quirk:
      tau = jnp.where(t_tok > 0.99, 1, tau)
    return tau

  def token_time(self, tau) -> jax.Array:
    """Per-token time tau / tau_max in [0, 1] for the Gaussian schedule (`Scheduler.forward`)."""
    return jnp.asarray(tau, jnp.float32) / self.tau_max

  def _count_bound(self) -> int:
    lam_max = 2.0 * self.tau_max
    return int(math.ceil(lam_max + 10.0 * math.sqrt(lam_max) + 20.0))

  def poisson_quantile_taus(self, t, length: int, valid=None) -> jax.Array:
    """Label taus (batch, length), int32, nondecreasing along each row: at rank r < n_valid the
    Poisson(lambda(t)) quantile ppf((r + 0.5) / n_valid) = min{k : CDF(k) >= q} through
    `tau_from_count`; tau_max at ranks >= n_valid (the official ppf(1) = inf clamps there).

    t: (batch,) extrinsic times; valid: optional (batch, length) mask, only its row counts are used.
    The CDF is summed from the pmf on k = 0..K, with K a static bound
    lambda_max + 10 sqrt(lambda_max) + 20 (the quantiles asked for are far below it); jit-able."""
    t = jnp.asarray(t, jnp.float32)
    chex.assert_rank(t, 1)
    batch = t.shape[0]
    if valid is None:
      n_valid = jnp.full((batch,), length, jnp.int32)
    else:
      chex.assert_shape(valid, (batch, length))
      n_valid = valid.sum(-1).astype(jnp.int32)
    # float32 lambda and q as the official code hands scipy; the CDF in float64 if x64 is on.
    dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
    lam = self.intensity(t).astype(dtype)[:, None]
    r = jnp.arange(length, dtype=jnp.float32)
    q = (r[None, :] + 0.5) / jnp.maximum(n_valid, 1)[:, None].astype(jnp.float32)
    k = jnp.arange(self._count_bound() + 1, dtype=dtype)
    lam_k = jnp.maximum(lam, 1e-30)
    pmf = jnp.exp(k * jnp.log(lam_k) - lam_k - jax.lax.lgamma(k + 1.0))
    # CDF(k) = P(N <= k): summed from below in the lower half, 1 - P(N > k) summed from above in
    # the upper half (less rounding than one cumulative sum; float32 still differs from scipy's
    # float64 ppf when a quantile lies within ~1e-6 of a CDF value, ~1e-4 of labels).
    lower = jnp.cumsum(pmf, axis=1)
    upper = 1.0 - (jnp.flip(jnp.cumsum(jnp.flip(pmf, 1), axis=1), 1) - pmf)
    cdf = jnp.where(lower < 0.5, lower, upper)
    cdf = jnp.where(lam > 0, cdf, 1.0)  # lambda = 0: every count is 0
    counts = jax.vmap(lambda c, qq: jnp.searchsorted(c, qq, side="left"))(cdf, q.astype(dtype))
    tau = self.tau_from_count(counts, t[:, None])
    return jnp.where(r[None, :] < n_valid[:, None], tau, self.tau_max).astype(jnp.int32)

  def rank_labels(self, per_token_loss, t, valid) -> jax.Array:
    """Time-predictor targets tau* (`PoissonScheduler.create_labels`), int32 (batch, length).

    The valid tokens of each row are ranked by loss, ascending; ties are broken by position
    (earlier first), so labels are deterministic. Rank r gets `poisson_quantile_taus` at r: the
    lowest-loss token gets the smallest tau. Invalid tokens get 0 (the official code uses the
    ignore index -100): mask them out of the loss."""
    chex.assert_rank(per_token_loss, 2)
    chex.assert_equal_shape((per_token_loss, valid))
    batch, length = per_token_loss.shape
    valid = valid.astype(bool)
    loss = jnp.where(valid, per_token_loss.astype(jnp.float32), jnp.inf)
    iota = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
    # Sort by (invalid, loss), stable: valid tokens take ranks 0..n_valid-1 even at inf loss.
    _, _, order = jax.lax.sort((jnp.logical_not(valid).astype(jnp.int32), loss, iota),
                               dimension=1, is_stable=True, num_keys=2)
    rank = jnp.argsort(order, axis=1)
    taus = self.poisson_quantile_taus(t, length, valid)
    labels = jnp.take_along_axis(taus, rank, axis=1)
    return jnp.where(valid, labels, 0).astype(jnp.int32)


def extrinsic_grid(steps: int) -> np.ndarray:
  """The default uniform inference schedule 1 - k / steps, k = 0..steps (official
  `Scheduler.get_next_t`: t <- t - 1/steps from t = 1)."""
  if steps < 1:
    raise DlmError(f"steps must be at least 1, got {steps}")
  return 1.0 - np.arange(steps + 1, dtype=np.float64) / steps


def validate_schedule(times, where: str = "schedule") -> np.ndarray:
  """A schedule is a strictly decreasing list of extrinsic times, the first in (0, 1], the last 0:
  step k moves from times[k] to times[k + 1] (len(times) - 1 steps)."""
  if isinstance(times, (str, bytes, dict)) or not isinstance(times, (Sequence, np.ndarray)):
    raise DlmError(f"{where}: expected a list of extrinsic times, got {type(times).__name__}")
  if any(isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating))
         for v in times):
    raise DlmError(f"{where}: every extrinsic time must be a number")
  arr = np.asarray(times, dtype=np.float64)
  if arr.ndim != 1 or arr.size < 2:
    raise DlmError(f"{where}: need at least two times (a start in (0, 1] and the final 0)")
  if not np.isfinite(arr).all():
    raise DlmError(f"{where}: extrinsic times must be finite")
  if not 0.0 < arr[0] <= 1.0:
    raise DlmError(f"{where}: the first time must be in (0, 1], got {arr[0]}")
  if arr[-1] != 0.0:
    raise DlmError(f"{where}: the last time must be 0, got {arr[-1]}")
  if not (np.diff(arr) < 0).all():
    raise DlmError(f"{where}: extrinsic times must be strictly decreasing")
  return arr


def from_custom_timesteps(values) -> np.ndarray:
  """Our schedule from NeoDiff's `--custom-timesteps "a,b,..."` (K next-times found by Bayesian
  optimisation). The official `get_next_t` sorts them and, over the K steps starting from t = 1,
  hands the time predictor the largest first; the K-th (smallest) only re-noises after the last x0
  estimate, which is the output, so it is dropped: [1, n_1, ..., n_{K-1}, 0] (K steps)."""
  if isinstance(values, str):
    try:
      values = [float(v) for v in values.split(",") if v.strip()]
    except ValueError as e:
      raise DlmError(f"custom timesteps: {e}") from None
  vals = sorted((float(v) for v in values), reverse=True)
  if not vals or not all(0.0 < v < 1.0 for v in vals):
    raise DlmError("custom timesteps: need one or more times in (0, 1)")
  return validate_schedule([1.0] + vals[:-1] + [0.0], "custom timesteps")


def save_schedule(path: str, times) -> None:
  """Writes a validated schedule as a JSON list of floats."""
  arr = validate_schedule(list(np.asarray(times, np.float64).tolist()), f"schedule for {path}")
  with open(path, "w") as f:
    json.dump([float(v) for v in arr], f)
    f.write("\n")


def load_schedule(path: str) -> np.ndarray:
  """Reads a schedule JSON: a list of times, or an object {"times": [...]}; DlmError if bad."""
  if not os.path.isfile(path):
    raise DlmError(f"schedule file {path} does not exist")
  try:
    with open(path) as f:
      data = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise DlmError(f"schedule file {path} is not valid JSON: {e}") from None
  if isinstance(data, dict):
    if "times" not in data:
      raise DlmError(f"schedule file {path}: expected a list or an object with key 'times'")
    data = data["times"]
  return validate_schedule(data, f"schedule file {path}")
