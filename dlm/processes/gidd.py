"""GIDD: masking mixed with uniform noise (von Ruette et al. 2025, "Generalized Interpolating
Discrete Diffusion"), the discrete channel of CCDD (Zhou et al. 2025, code
`ccdd/diffusion_process.py`).

Forward marginal of a token x at time t (GIDD eq. 1 in the CCDD form; time per token):
  q_t(z | x) = alpha_t delta_x(z) + [beta_t pi_t](z),
  alpha_t = a(t) / (1 + c_t),   beta_t pi_t = ((1 - a(t)) delta_m + c_t u) / (1 + c_t),
with a(t) the masking schedule's alpha (dlm/processes/schedules.py; 1 - t for `linear`, as
CCDD), m = [MASK], u uniform over the V - 1 other tokens and c_t = B (t (1 - t))^(gamma / 2),
B = 2^gamma p_u / (1 - p_u), so that at t = 1/2 the uniform component carries probability
p_u.
p_u = 0 is exactly the masked process (dlm/processes/masked.py).

NELBO (GIDD Thm. 3.2; CCDD `loss.py` logs it as `elbo`), per token, in nats:
  w_t(z_t, x) [ KL(q_t(.|x) || q_t(.|x_hat)) + r - log r - 1 ],  r = q_t(z_t|x) / q_t(z_t|x_hat),
  w_t(z, x) = ( d/dt [beta_t pi_t](z) - (d/dt log alpha_t) [beta_t pi_t](z) ) / q_t(z | x),
with x_hat the model's distribution over clean tokens (never [MASK]). The time derivatives are
taken by `jax.jvp`, so any masking schedule works; for a(t) = 1 - t they are GIDD's closed forms
(`GiddLoss.get_weights`: 1/((1-t)t) on [MASK], (c + (1-t)c')/((1-t)c) on a uniform token). Plus
the masked process's reconstruction term (1 - a(0)) log V, so that p_u = 0 gives its NELBO.

At the ends of the time interval: for 0 < gamma < 2, c'(t) is infinite at t = 0 and t = 1, and
every given (prompt / source) token sits at t = 0. So, where p_u > 0, the weights are evaluated
at a safe time (1/2) wherever t is 0 or 1 and set to 0 there (a time of measure zero), and the
weight is masked to the scored positions before it multiplies the divergence (a double
`where`): no inf or NaN reaches the gradient through a branch that is not selected (it did,
as 0 * inf, on every step with a prompt). With p_u = 0, c = 0 is a constant and the weights
are the masked process's at every t. Training times are drawn in (eps, 1 - eps), eps = 1e-4,
stratified over the batch when `antithetic`, as the official `CoevolutionaryDiffusion`.
The process is valid only for 0 < gamma <= 2: beyond 2 the transition q_{t|s} gets negative
entries (the uniform component's rate turns negative at late times, t > 2/3 for gamma = 4, which
`posterior` would silently clamp), so other gammas are refused.
CCDD's released configs name gamma = 4 but set p_u = 0, where gamma plays no part.

Reverse step (GIDD §3.3, CCDD `sampling.py`): q(z_s | z_t, x_hat) ∝ q_{t|s}(z_t | z_s)
q_s(z_s | x_hat), with q_{t|s}(z_t | v) = (alpha_t / alpha_s) delta_v(z_t) + [beta_t pi_t](z_t)
- (alpha_t / alpha_s) [beta_s pi_s](z_t).
"""

from __future__ import annotations

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp

from dlm.errors import DlmError
from dlm.processes import time as time_lib
from dlm.processes.categorical import zero_masking
from dlm.processes.schedules import MaskingSchedule


def check_parameters(p_uniform: float, gamma: float) -> None:
  """The uniform share and gamma for which the process is valid (see the module doc)."""
  if not 0.0 <= p_uniform < 1.0:
    raise DlmError(f"ccdd.p_uniform must be in [0, 1), got {p_uniform!r}")
  if not 0.0 < gamma <= 2.0:
    raise DlmError(f"ccdd.gamma must be in (0, 2] (GIDD's process is valid only there), got "
                   f"{gamma!r}")


@dataclasses.dataclass(frozen=True)
class GiddProcess:
  schedule: MaskingSchedule
  mask_id: int
  vocab_size: int
  p_uniform: float = 0.0
  gamma: float = 1.0
  antithetic: bool = True
  time_eps: float = 1e-4  # training times in (time_eps, 1 - time_eps), as the official code

  def __post_init__(self):
    check_parameters(self.p_uniform, self.gamma)
    if not 0.0 <= self.time_eps < 0.5:
      raise DlmError(f"time_eps must be in [0, 1/2), got {self.time_eps}")

  @property
  def b(self) -> float:
    return 2.0**self.gamma * self.p_uniform / (1.0 - self.p_uniform)

  def sample_time(self, rng, batch_size: int) -> jax.Array:
    """One time per sequence (batch,) in (eps, 1 - eps); stratified when antithetic."""
    return time_lib.sample_times(rng, batch_size, self.antithetic, self.time_eps)

  # The marginal: three scalars per time, for z = x, z = [MASK], z = another token.

  def _c(self, t):
    if self.b == 0.0:  # a constant: no 0 * inf derivative at t = 0 or 1
      return jnp.zeros_like(t)
    return self.b * jnp.clip(t * (1.0 - t), 0.0, None) ** (self.gamma / 2.0)

  def _parts(self, t):
    """(alpha_t, [beta pi](mask), [beta pi](one other token)), each shaped like t."""
    t = jnp.asarray(t, jnp.float32)
    a, c = self.schedule.alpha(t), self._c(t)
    return a / (1.0 + c), (1.0 - a) / (1.0 + c), c / (self.vocab_size - 1) / (1.0 + c)

  def marginal(self, x_probs, t):
    """q_t(. | x) for a distribution x_probs over clean tokens (batch, length, V) -> same."""
    alpha, bp_m, bp_u = (p[..., None] for p in self._parts(t))
    is_mask = jnp.arange(self.vocab_size) == self.mask_id
    return alpha * x_probs + jnp.where(is_mask, bp_m, bp_u)

  def forward_sample(self, rng, x, t, scored) -> jax.Array:
    """z_t ~ q_t(. | x), per token; positions that are not scored stay x."""
    chex.assert_equal_shape((x, t, scored))
    alpha, bp_m, _ = self._parts(t)
    u = jax.random.uniform(rng, x.shape)
    rng_tok = jax.random.fold_in(rng, 1)
    other = jax.random.randint(rng_tok, x.shape, 0, self.vocab_size - 1)
    other = jnp.where(other >= self.mask_id, other + 1, other)  # uniform over non-mask tokens
    z = jnp.where(u < alpha, x, jnp.where(u < alpha + bp_m, self.mask_id, other))
    return jnp.where(scored, z, x)

  def _weights(self, t):
    """ELBO weights (w on z = x, w on [MASK], w on another token) per time (see module doc);
    with p_u > 0, 0 at t = 0 and t = 1, where c'(t) is infinite."""
    t = jnp.asarray(t, jnp.float32)
    if self.b > 0.0:
      edge = (t <= 0.0) | (t >= 1.0)
      t = jnp.where(edge, 0.5, t)  # a safe time: no inf in either branch of the last `where`
    else:
      edge = jnp.zeros(t.shape, bool)
    (alpha, bp_m, bp_u), (d_alpha, dbp_m, dbp_u) = jax.jvp(self._parts, (t,), (jnp.ones_like(t),))
    dlog_alpha = d_alpha / alpha
    num_m = dbp_m - dlog_alpha * bp_m
    num_u = dbp_u - dlog_alpha * bp_u
    tiny = jnp.finfo(jnp.float32).tiny
    w_x = num_u / jnp.maximum(alpha + bp_u, tiny)
    w_m = num_m / jnp.maximum(bp_m, tiny)
    w_u = jnp.where(bp_u > 0, num_u / jnp.maximum(bp_u, tiny), 0.0)
    return tuple(jnp.where(edge, 0.0, w) for w in (w_x, w_m, w_u))

  def nelbo(self, logits, x, z, t, scored, divergence=None) -> jax.Array:
    """Per-token NELBO in nats (batch, length); zero where not scored (`divergence`: this
    batch's `divergence(...)`, if already computed)."""
    if divergence is None:
      divergence = self.divergence(logits, x, z, t)
    chex.assert_equal_shape((x, z, t, scored, divergence))
    w_x, w_m, w_u = self._weights(t)
    w = jnp.where(z == x, w_x, jnp.where(z == self.mask_id, w_m, w_u))
    # Masked before it multiplies: the divergence's gradient at unselected positions is then
    # multiplied by 0, never by an inf or NaN weight (the "double where").
    w = jnp.where(scored, w, 0.0)
    recon = (1.0 - self.schedule.alpha(jnp.zeros(()))) * math.log(self.vocab_size)
    return jnp.where(scored, w * divergence + recon, 0.0)

  def dynamic_weight(self, x, z, t) -> jax.Array:
    """The released CCDD code's `dynamic` loss weight (CCDD `ccdd/loss.py`, `get_weights` with
    `loss_weighting: dynamic`, clipped to its configs' [min_loss_weight, max_loss_weight] =
    [0, 2]): 2 on a [MASK], 1 on another token, and on a token equal to x
    B / V exp(gamma / 2 sigmoid(-t)) (0 when p_u = 0), in place of the ELBO's weights."""
    x_scale = self.b / self.vocab_size * jnp.exp(self.gamma / 2.0 * jax.nn.sigmoid(-t))
    w = jnp.where(z == x, x_scale, jnp.where(z == self.mask_id, 2.0, 1.0))
    return jnp.clip(w, 0.0, 2.0)

  def divergence(self, logits, x, z, t) -> jax.Array:
    """Each token's KL(q_t(.|x) || q_t(.|x_hat)) plus the importance term at z_t (GIDD
    `loss.py`'s `kl_loss + is_loss`), before any weight: (batch, length)."""
    chex.assert_equal_shape((x, z, t))
    x_hat = jax.nn.softmax(zero_masking(logits, self.mask_id), axis=-1)
    log_p = jnp.log(jnp.maximum(self.marginal(x_hat, t), 1e-30))
    log_q = jnp.log(jnp.maximum(self.marginal(jax.nn.one_hot(x, self.vocab_size), t), 1e-30))
    q = jnp.exp(log_q)
    kl = jnp.sum(jnp.where(q > 0, q * (log_q - log_p), 0.0), axis=-1)
    log_r = (jnp.take_along_axis(log_q, z[..., None], -1) -
             jnp.take_along_axis(log_p, z[..., None], -1))[..., 0]
    return kl + jnp.expm1(log_r) - log_r

  def posterior(self, x_hat, z_t, t, s) -> jax.Array:
    """q(z_s | z_t, x_hat) over the vocabulary (batch, length, V), for s < t (module doc)."""
    chex.assert_equal_shape((z_t, t, s))
    a_t, m_t, u_t = self._parts(t)
    a_s, m_s, u_s = self._parts(s)
    ratio = a_t / a_s
    is_mask_zt = z_t == self.mask_id
    # [beta_t pi_t - ratio beta_s pi_s](z_t): mass reaching z_t from any v by the noise.
    leak = jnp.where(is_mask_zt, m_t - ratio * m_s, u_t - ratio * u_s)
    stay = jax.nn.one_hot(z_t, self.vocab_size) * ratio[..., None]
    likelihood = stay + jnp.maximum(leak, 0.0)[..., None]
    prior = self.marginal(x_hat, s)
    post = likelihood * prior
    return post / jnp.maximum(post.sum(-1, keepdims=True), 1e-30)
