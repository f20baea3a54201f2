"""Masking schedules: alpha(t) = P(a token is still clean at time t), t in [0, 1].

MD4 (Shi et al. 2024, arXiv 2406.04329, §2 and Table 1) and MDLM (Sahoo et al. 2024, arXiv
2406.07524, §3.2). `linear`, `cosine` and `polynomial` are wrapped as in md4's code,
`alpha_eps(t) = (1 - 2 eps) alpha(t) + eps`, so that 0 < alpha < 1 and the ELBO weight stays
finite; `loglinear` is MDLM's `sigma(t) = -log(1 - (1 - eps) t)`, i.e. `alpha = 1 - (1 - eps) t`.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp

from dlm.errors import DlmError

KINDS = ("linear", "cosine", "polynomial", "loglinear")


@dataclasses.dataclass(frozen=True)
class MaskingSchedule:
  kind: str = "linear"
  power: float = 2.0  # polynomial only: alpha = 1 - t^power
  eps: float = 1e-4

  def __post_init__(self):
    if self.kind not in KINDS:
      raise DlmError(f"unknown masking schedule {self.kind!r}; expected one of {KINDS}")

  def _raw(self, t):
    if self.kind == "linear":
      return 1.0 - t
    if self.kind == "cosine":
      return 1.0 - jnp.cos(math.pi / 2.0 * (1.0 - t))
    if self.kind == "polynomial":
      return 1.0 - t**self.power
    return 1.0 - (1.0 - self.eps) * t  # loglinear

  def _raw_prime(self, t):
    if self.kind == "linear":
      return -jnp.ones_like(t)
    if self.kind == "cosine":
      return -math.pi / 2.0 * jnp.sin(math.pi / 2.0 * (1.0 - t))
    if self.kind == "polynomial":
      return -self.power * t ** (self.power - 1.0)
    return -(1.0 - self.eps) * jnp.ones_like(t)

  def masked_fraction(self, t):
    """1 - alpha(t) without the eps clipping: the fraction of tokens masked at t."""
    return 1.0 - self._raw(t)

  def time_of(self, fraction):
    """The inverse of `masked_fraction`: the time at which a fraction of tokens is masked."""
    if self.kind == "linear":
      return fraction
    if self.kind == "cosine":
      return 1.0 - 2.0 / math.pi * jnp.arccos(jnp.clip(fraction, 0.0, 1.0))
    if self.kind == "polynomial":
      return fraction ** (1.0 / self.power)
    return fraction / (1.0 - self.eps)  # loglinear

  def alpha(self, t):
    """P(clean at t): decreasing from alpha(0) ~ 1 to alpha(1) ~ 0."""
    if self.kind == "loglinear":
      return self._raw(t)
    return (1.0 - 2.0 * self.eps) * self._raw(t) + self.eps

  def alpha_prime(self, t):
    """d alpha / dt."""
    if self.kind == "loglinear":
      return self._raw_prime(t)
    return (1.0 - 2.0 * self.eps) * self._raw_prime(t)

  def weight(self, t):
    """Continuous-time NELBO weight -alpha'(t) / (1 - alpha(t)) (MDLM eq. 10, MD4 eq. 5)."""
    return -self.alpha_prime(t) / jnp.maximum(1.0 - self.alpha(t), 1e-30)
