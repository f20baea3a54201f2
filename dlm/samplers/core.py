"""What every masked-diffusion sampler shares: its settings, the canvas, guidance, block plans.

A sampler fills the masked positions of a canvas `(tokens, given)`: `given` positions (a prompt,
the context around infilled spans) are never changed and have time 0; the others start as
[MASK]. The model is seen only through a denoiser `(z, t) -> logits` with a per-token time of
shape (batch, length). Samplers return the tokens, the denoiser calls (NFE) per sequence, and
the step at which each position was revealed (for replays).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp

from dlm.errors import DlmError

Denoiser = Callable[[jax.Array, jax.Array], jax.Array]
READOUTS = ("mean", "x0")
REVEALS = ("even", "dream")


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
  name: str = "ancestral"
  steps: int = 128
  block_length: int = 0  # semi-autoregressive blocks; 0 = one block
  temperature: float = 1.0  # 0 = greedy
  top_k: int = 0  # 0 = off
  top_p: float = 1.0  # 1 = off
  float64: bool = False  # draw in float64 (needs jax_enable_x64)
  cfg_scale: float = 0.0  # classifier-free guidance weight w (LLaDA); 0 = off
  grid: str = "uniform"  # ancestral time grid: 'uniform' or 'cosine' (md4)
  z_guidance: float = 1.0  # CCDD guidance w: w f(x, z) + (1 - w) f(x, 0); 1 = off
  draft_length: int = 5  # ASSD (any_order family): tokens drafted per step, k >= 1
  # Tokens that end a sample (`text.fill` sets the tokenizer's eos and pads): the autoregressive
  # sampler stops a row at the first one it draws; fixed-canvas samplers ignore them.
  stop_ids: tuple[int, ...] = ()
  # Cosmos samplers: what is decoded at t_min. 'mean': the last step's mean, no noise (the
  # official EulerDiffEqSolver's x_mean); 'x0': one more x0 pass at t_min (one more NFE).
  readout: str = "mean"
  # Confidence orders: tokens revealed per step. 'even': LLaDA's `get_num_transfer_tokens`
  # (an even split of each block's masked tokens over its steps); 'dream': Dream's
  # int(m (1 - s / t)) of the m still masked on linspace(1, 1e-3, steps + 1), the rest last.
  reveal: str = "even"

  def __post_init__(self):
    if self.readout not in READOUTS:
      raise DlmError(f"unknown readout {self.readout!r}; expected one of {READOUTS}")
    if self.reveal not in REVEALS:
      raise DlmError(f"unknown reveal schedule {self.reveal!r}; expected one of {REVEALS}")


class Canvas(NamedTuple):
  tokens: jax.Array  # (batch, length) int32: given tokens, [MASK] elsewhere
  given: jax.Array  # (batch, length) bool: never changed, time 0


class Samples(NamedTuple):
  tokens: jax.Array  # (batch, length)
  nfe: jax.Array  # (batch,) denoiser forward passes spent on each sequence
  revealed_at: jax.Array  # (batch, length) step that revealed each position; -1 if given
  sampler_passes: jax.Array | None = None  # (batch,) joint_head samplers: head passes


def blank_canvas(batch: int, length: int, mask_id: int) -> Canvas:
  return Canvas(jnp.full((batch, length), mask_id, jnp.int32), jnp.zeros((batch, length), bool))


def block_plan(length: int, cfg: SamplerConfig) -> tuple[int, int, int]:
  """(number of blocks, block length, steps per block); checks that they divide evenly."""
  block = cfg.block_length or length
  if length % block:
    raise DlmError(f"block_length={block} does not divide the sample length {length}")
  blocks = length // block
  if cfg.steps <= 0 or cfg.steps % blocks:
    raise DlmError(f"steps={cfg.steps} must be a positive multiple of the {blocks} blocks")
  return blocks, block, cfg.steps // blocks


def guided(denoise: Denoiser, given: jax.Array, mask_id: int, scale: float) -> tuple[Denoiser, int]:
  """Classifier-free guidance in LLaDA's form: the unconditional pass masks the given tokens,
  logits = un + (w + 1)(cond - un). Returns the denoiser and its passes per call."""
  if scale == 0:
    return denoise, 1

  def fn(z, t):
    cond = denoise(z, t)
    un = denoise(jnp.where(given, mask_id, z), jnp.where(given, 1.0, t))
    return un + (scale + 1.0) * (cond - un)

  return fn, 2


def zero_masking(logits: jax.Array, mask_id: int) -> jax.Array:
  """The model never proposes [MASK] (MDLM's zero-masking parameterisation)."""
  return logits.astype(jnp.float32).at[..., mask_id].set(-jnp.inf)


def first_step(given, block_len: int, per_block: int) -> jax.Array:
  """The step a block-wise sampler starts at: that of the first block with a position to
  generate in any row. Earlier blocks (a prompt's) would reveal nothing, so they cost no pass
  and no NFE; a canvas with nothing to generate starts past the last step."""
  todo = jnp.any(~given, axis=0)
  start = jnp.argmax(todo) // block_len * per_block
  return jnp.where(jnp.any(todo), start, given.shape[1] // block_len * per_block).astype(jnp.int32)


def block_times(t_current, block_of, current_block, given):
  """Per-token time: given and finished blocks 0, the current block t, later blocks 1."""
  block_of = jnp.broadcast_to(block_of, given.shape)
  chex.assert_rank(given, 2)
  t = jnp.where(block_of < current_block, 0.0, jnp.where(block_of > current_block, 1.0,
                                                          t_current))
  return jnp.where(given, 0.0, t).astype(jnp.float32)
