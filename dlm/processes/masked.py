"""Masked (absorbing-state) diffusion: forward masking, the NELBO, and the reverse posterior.

Forward process (MDLM eq. 2 / MD4 eq. 1): each token independently stays clean with
probability alpha(t) and becomes [MASK] otherwise; time is per token, shape (batch, length), so
clean prompt tokens are simply time 0 (`scored=False`).

NELBO in nats (MD4 eq. 5, MDLM eq. 10), summed over tokens:
  continuous time:  sum_{l masked} -alpha'(t)/(1 - alpha(t)) * -log p(x_l | z_t)
  discrete time T:  sum_{l masked} T (alpha(s) - alpha(t)) / (1 - alpha(t)) * -log p(x_l | z_t),
                    t in {1/T, ..., 1}, s = t - 1/T (md4's `cont_time=False` branch)
plus md4's reconstruction term (1 - alpha(0)) log V per token. With exact conditionals the
continuous-time bound is tight: its expectation is the data entropy (tested).

Two ways to draw the masks (`masking`):
  'time'   one time t per row, each scored token masked with probability 1 - alpha(t) (MDLM,
           MD4); the NELBO above.
  'count'  each row's number k of masked tokens uniform on 1..L (L: its scored tokens), a
           uniformly random subset of that size, weight L / k on each masked token: the
           estimator of LLaDA's likelihood evaluation (Nie et al. 2025, eq. 14 / App. B.6;
           `masked_terms` in dlm/likelihood.py). It has the same expectation as the
           continuous-time NELBO in its eps -> 0 limit, for every schedule: a mask set of size k
           has weight int -alpha'/(1 - alpha) (1 - alpha)^k alpha^(L - k) dt = B(k, L - k + 1),
           and the C(L, k) sets of that size sum to 1 / k. But its weight is at most L, where
           the time form's 1/t on a row with one masked token at a small t is unbounded: the
           time form's variance grows as log(1 / eps). The network sees the schedule's time of the masked fraction k / L
           (`MaskingSchedule.time_of`), as a sampler's step would show it such a canvas. No
           reconstruction term: it is the eps -> 0 bound.

Parameterisation (MDLM §3.3): zero-masking (the model never predicts [MASK]) and carry-over
(unmasked tokens are copied).
"""

from __future__ import annotations

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp

from dlm.processes import time as time_lib
from dlm.processes.categorical import zero_masking
from dlm.processes.schedules import MaskingSchedule


MASKINGS = ("time", "count")


@dataclasses.dataclass(frozen=True)
class MaskedProcess:
  schedule: MaskingSchedule
  mask_id: int
  vocab_size: int
  timesteps: int = 0  # 0: continuous-time NELBO; T > 0: discrete-time NELBO with T steps
  antithetic: bool = True  # low-discrepancy times over the batch (MD4, Kingma et al. 2021)
  masking: str = "time"  # MASKINGS: 'time' (per-token Bernoulli at t) | 'count' (see above)

  def sample(self, rng: jax.Array, x, scored) -> tuple[jax.Array, jax.Array]:
    """(z, each row's time (batch,)): the forward process on rows x (batch, length), masking
    only `scored` tokens, by `masking`. With 'count' the time is the schedule's time of the
    masked fraction k / L."""
    rng_t, rng_mask = jax.random.split(rng)
    u = self.sample_time(rng_t, x.shape[0])
    if self.masking == "time":
      return self.forward_sample(rng_mask, x, jnp.broadcast_to(u[:, None], x.shape), scored), u
    lengths = scored.sum(axis=-1)
    counts = jnp.minimum(jnp.floor(u * lengths).astype(jnp.int32) + 1, lengths)
    draws = jnp.where(scored, jax.random.uniform(rng_mask, x.shape), jnp.inf)
    rank = jnp.argsort(jnp.argsort(draws, axis=-1), axis=-1)
    z = jnp.where(scored & (rank < counts[:, None]), self.mask_id, x)
    return z, self.schedule.time_of(counts / jnp.maximum(lengths, 1))

  def sample_time(self, rng: jax.Array, batch_size: int) -> jax.Array:
    """One time per sequence, shape (batch,): in [0, 1), or on the grid {1/T..1}."""
    u = time_lib.sample_times(rng, batch_size, self.antithetic)
    if self.timesteps:
      return (jnp.floor(u * self.timesteps) + 1.0) / self.timesteps
    return u

  def forward_sample(self, rng, x, t, scored) -> jax.Array:
    """z_t ~ q(z_t | x): masks each scored token with probability 1 - alpha(t)."""
    chex.assert_equal_shape((x, t, scored))
    masked = jax.random.uniform(rng, x.shape) >= self.schedule.alpha(t)
    return jnp.where(masked & scored, self.mask_id, x)

  def weight(self, t) -> jax.Array:
    """Per-token NELBO weight for masked positions (continuous or discrete time; with 'count'
    masking L / k, from the time of the fraction k / L)."""
    if self.masking == "count":
      return 1.0 / jnp.maximum(self.schedule.masked_fraction(t), 1e-30)
    if self.timesteps:
      s = t - 1.0 / self.timesteps
      a_t, a_s = self.schedule.alpha(t), self.schedule.alpha(s)
      return self.timesteps * (a_s - a_t) / (1.0 - a_t)
    return self.schedule.weight(t)

  def nelbo(self, log_p_x, z, t, scored) -> jax.Array:
    """Per-token NELBO in nats, shape (batch, length); zero where not scored."""
    chex.assert_equal_shape((log_p_x, z, t, scored))
    masked = z == self.mask_id
    diffusion = jnp.where(masked & scored, self.weight(t) * -log_p_x, 0.0)
    if self.masking == "count":
      return diffusion
    recon = (1.0 - self.schedule.alpha(jnp.zeros(()))) * math.log(self.vocab_size)
    return diffusion + jnp.where(scored, recon, 0.0)

  def log_probs(self, logits, z) -> jax.Array:
    """Zero-masking and carry-over: log p(x | z_t) over the vocabulary, float32."""
    log_p = jax.nn.log_softmax(zero_masking(logits, self.mask_id), axis=-1)
    carried = jax.nn.one_hot(z, logits.shape[-1], dtype=jnp.bool_)
    return jnp.where((z == self.mask_id)[..., None], log_p, jnp.where(carried, 0.0, -jnp.inf))

  def log_prob_of(self, logits, x) -> jax.Array:
    """log p(x_l | z_t) under zero-masking, for every position; shape (batch, length)."""
    logits = zero_masking(logits, self.mask_id)
    picked = jnp.take_along_axis(logits, x[..., None], axis=-1)[..., 0]
    return picked - jax.nn.logsumexp(logits, axis=-1)
