"""Masked diffusion family (MDLM, Sahoo et al. 2024; MD4, Shi et al. 2024): the backbone as the
denoiser of `dlm.processes.masked.MaskedProcess`."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from flax import nnx

from dlm import config as config_lib
from dlm import registry
from dlm.errors import DlmError
from dlm.models import transformer
from dlm.models.family import given_mask, scored_mask
from dlm.models.layers import TimeLevels
from dlm.processes.masked import MASKINGS, MaskedProcess
from dlm.processes.schedules import KINDS, MaskingSchedule

LOSS_NORMS = ("token", "response")


@dataclasses.dataclass(frozen=True)
class MaskedConfig:
  """Config section `diffusion`: the masked diffusion process (dlm/processes/masked.py), also
  the token channel of CCDD and the base of a joint head."""

  schedule: str = "linear"  # 'linear' | 'cosine' | 'polynomial' | 'loglinear'
  power: float = 2.0  # polynomial only
  eps: float = 1e-4  # keeps 0 < alpha < 1 (md4); loglinear: alpha(1) = eps (MDLM)
  timesteps: int = 0  # 0: continuous-time NELBO; T > 0: discrete-time NELBO with T steps
  antithetic: bool = True  # low-discrepancy time sampling over the batch
  # How a row's masks are drawn (dlm/processes/masked.py): 'time' = each token with
  # probability 1 - alpha(t) (MDLM/MD4); 'count' = k uniform on 1..L tokens, weight L / k
  # (LLaDA's likelihood estimator): the same bound in expectation, bounded weights.
  masking: str = "time"
  # How the loss is averaged: 'token' = over all scored tokens of the batch (MDLM/MD4);
  # 'response' = each row's loss divided by its scored length (a pair's response with its
  # padding), then the mean over rows, as in LLaDA's SFT. Reported bits stay per token.
  loss_norm: str = "token"

  def __post_init__(self):
    if self.schedule not in KINDS:
      raise DlmError(f"unknown diffusion.schedule {self.schedule!r}; expected one of {KINDS}")
    if self.loss_norm not in LOSS_NORMS:
      raise DlmError(f"diffusion.loss_norm must be one of {LOSS_NORMS}, got "
                     f"{self.loss_norm!r}")
    if self.masking not in MASKINGS:
      raise DlmError(f"diffusion.masking must be one of {MASKINGS}, got {self.masking!r}")
    if self.masking == "count" and self.timesteps:
      raise DlmError("diffusion.masking='count' is the continuous-time bound: it needs "
                     f"diffusion.timesteps=0, got {self.timesteps}")
    if not isinstance(self.timesteps, int) or self.timesteps < 0:
      raise DlmError(f"diffusion.timesteps must be a non-negative integer, got "
                     f"{self.timesteps!r}")

  def schedule_of(self) -> MaskingSchedule:
    return MaskingSchedule(self.schedule, self.power, self.eps)


class MaskedDiffusion(nnx.Module):
  """`loss` gives the NELBO; samplers use `denoise` and `process` (`log_probs`: zero-masking
  and carry-over)."""
  family = "masked"

  def __init__(self, net_cfg: transformer.TransformerConfig, process: MaskedProcess,
               rngs: nnx.Rngs, loss_norm: str = "token"):
    self.net = transformer.Transformer(net_cfg, rngs)
    self.process = process
    self.loss_norm = loss_norm  # 'token' | 'response' (LLaDA SFT: per row, then the mean)

  def denoise(self, z, t, segment_ids=None, positions=None, *, rng=None):
    """Raw network logits at noisy tokens z with per-token time t (batch, length), or the
    same as `TimeLevels`."""
    t_in = t if self.net.cfg.conditioned else None
    return self.net(z, t_in, segment_ids, positions, rng=rng)

  def denoise_cached(self, z, t, positions, cache, mask):
    """`denoise` on a window of tokens z (batch, s) at canvas `positions` against a key/value
    cache of the canvas (`Transformer.cached`): (raw logits, the updated cache)."""
    return self.net.cached(z, positions, cache, mask, t if self.net.cfg.conditioned else None)

  def log_probs(self, z, t, segment_ids=None, positions=None):
    """log p(x_0 | z_t) over the vocabulary (never [MASK]; unmasked tokens carried over)."""
    return self.process.log_probs(self.denoise(z, t, segment_ids, positions), z)

  def corrupt(self, batch, rng):
    """Forward process on a batch: one time per sequence (`row_t`, (batch,)), tokens masked
    as the process's `masking` draws them (with prob 1 - alpha(t), or k of them). Padding and `given` tokens (a pair's source) are never noised nor
    scored; given tokens have time 0. `t` is the per-token time (batch, length)."""
    x = batch["tokens"]
    given = given_mask(batch)
    scored = scored_mask(batch)
    z, row_t = self.process.sample(rng, x, scored)
    t = jnp.where(given, 0.0, row_t[:, None])
    return {**batch, "z": z, "t": t, "row_t": row_t, "scored": scored}

  @staticmethod
  def time_levels(noisy) -> TimeLevels:
    """`corrupt`'s per-token time as its distinct values per row: the row's time, and 0 for
    given tokens when the batch has them (the network then conditions once per value)."""
    row_t = noisy["row_t"][:, None]
    if "given" not in noisy:
      return TimeLevels(row_t, jnp.zeros(noisy["t"].shape, jnp.int32))
    return TimeLevels(jnp.concatenate([row_t, jnp.zeros_like(row_t)], axis=1),
                      given_mask(noisy).astype(jnp.int32))

  def loss(self, noisy, *, rng=None, train: bool = True):
    """Sum over the batch of the per-token NELBO (nats), and metrics as sums.

    With `loss_norm="response"` (LLaDA's SFT) the objective is instead the sum over rows of
    each row's NELBO divided by its scored length (the response with its padding), and
    `metrics["norm"]` the number of such rows: the train step divides by it, so the update
    follows the mean over rows. `nelbo` and `tokens` stay the per-token bound's sums."""
    x, z, t, scored = noisy["tokens"], noisy["z"], noisy["t"], noisy["scored"]
    logits = self.denoise(z, self.time_levels(noisy), noisy["segment_ids"],
                          noisy["positions"], rng=rng if train else None)
    nelbo = self.process.nelbo(self.process.log_prob_of(logits, x), z, t, scored)
    total = nelbo.sum()
    metrics = {"nelbo": total, "tokens": scored.sum(),
               "masked": ((z == self.process.mask_id) & scored).sum()}
    if self.loss_norm == "response":
      lengths = scored.sum(axis=-1)
      objective = jnp.sum(nelbo.sum(axis=-1) / jnp.maximum(lengths, 1))
      metrics["norm"] = (lengths > 0).sum()
      return objective, metrics
    return total, metrics


def process_of(config, tokenizer) -> MaskedProcess:
  """The masked process of a config's `diffusion` section for a tokenizer."""
  options = config_options(config)
  return MaskedProcess(schedule=options.schedule_of(), mask_id=tokenizer.mask_id,
                       vocab_size=transformer.vocab_size(config, tokenizer),
                       timesteps=options.timesteps,
                       antithetic=options.antithetic, masking=options.masking)


def config_options(config) -> MaskedConfig:
  return config_lib.options(MaskedConfig, config.diffusion)


def build(config, tokenizer, rngs: nnx.Rngs) -> MaskedDiffusion:
  return MaskedDiffusion(transformer.for_tokenizer(config, tokenizer),
                         process_of(config, tokenizer), rngs,
                         loss_norm=config_options(config).loss_norm)


FAMILY = registry.Family("masked", build, sections={"diffusion": MaskedConfig})
