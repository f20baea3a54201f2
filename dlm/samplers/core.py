"""What every sampler shares: its settings, the canvas, the registry; guidance and block plans.

A sampler fills the masked positions of a canvas `(tokens, given)`: `given` positions (a prompt,
the context around infilled spans) are never changed and have time 0; the others start as
[MASK]. Samplers return the tokens, the network calls (NFE) per sequence, and the step at which
each position was revealed (for replays).

Every sampler is registered under its name for one family (`register`) with one signature,
`fn(model, sampling, rng, canvas, times) -> Samples`: the model of that family (seen through its
`denoise` and the attributes its family documents), the settings, a key, the canvas and an
optional explicit time grid. The masked-diffusion samplers themselves see the model only
through a denoiser `(z, t) -> logits` with a per-token time of shape (batch, length).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from dlm.errors import DlmError
from dlm.processes.time import GRIDS

Denoiser = Callable[[jax.Array, jax.Array], jax.Array]
READOUTS = ("mean", "x0")
REVEALS = ("even", "dream")
BLOCK_STARTS = ("prompt", "canvas")
CACHES = ("none", "prefix", "dual")


def _option(default, help_text: str):
  """A sampler option: a field with its documented default (`help`), which is also its
  command-line flag in sample.py and dlm.evaluate (`OPTIONS`)."""
  return dataclasses.field(default=default, metadata={"help": help_text})


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
  """A sampler's name and settings; the one source of their defaults and checks."""
  name: str = "ancestral"
  steps: int = _option(128, "Denoising steps (passes for some samplers).")
  block_length: int = _option(0, "Semi-autoregressive block length (0: one block).")
  temperature: float = _option(1.0, "Sampling temperature (0: greedy).")
  top_k: int = _option(0, "Top-k filtering (0: off).")
  top_p: float = _option(1.0, "Nucleus filtering (1: off).")
  float64: bool = _option(False, "Draw tokens in float64 (LLaDA's Gumbel precision; needs "
                                 "jax_enable_x64).")
  cfg_scale: float = _option(0.0, "Classifier-free guidance weight w (LLaDA; prompted "
                                  "sampling; 0: off).")
  grid: str = _option("uniform", "Ancestral time grid: 'uniform' or 'cosine' (md4).")
  z_guidance: float = _option(1.0, "CCDD guidance w on the representation channel: "
                                   "w f(x, z) + (1 - w) f(x, 0) (1: off).")
  draft_length: int = _option(5, "ASSD (any_order family): tokens drafted per step, k >= 1.")
  # Tokens that end a sample (`text.fill` sets the tokenizer's eos and pads): the autoregressive
  # sampler stops a row at the first one it draws; fixed-canvas samplers ignore them.
  stop_ids: tuple[int, ...] = ()
  readout: str = _option("mean", "Cosmos: decode the last step's 'mean' (no noise; the "
                                 "official EulerDiffEqSolver's x_mean) or one more 'x0' pass "
                                 "at t_min (+1 NFE).")
  reveal: str = _option("even", "Confidence orders: tokens revealed per step, 'even' (LLaDA's "
                                "get_num_transfer_tokens: each block's masked tokens split "
                                "evenly over its steps) or 'dream' (Dream's int(m (1 - s/t)) "
                                "of the m still masked on linspace(1, 1e-3, steps + 1)).")
  blocks_from: str = _option("prompt", "Where --block_length blocks start: 'prompt' (each row's "
                                       "first position to generate, as LLaDA's generate) or "
                                       "'canvas' (position 0).")
  threshold: float = _option(0.0, "Confidence orders: reveal every masked token of the block "
                                  "whose confidence exceeds this, at least the most confident "
                                  "one per step, until the block is done (Fast-dLLM's parallel "
                                  "decoding; --steps is then unused); 0: off.")
  factor: float = _option(0.0, "Confidence orders: Fast-dLLM's factor rule, revealing the most "
                               "confident n while the n-th confidence c_n > 1 - factor / "
                               "(n + 1), at least one per step; 0: off.")
  cache: str = _option("none", "Confidence orders in blocks: reuse the keys and values of the "
                               "positions outside the window each step computes, refreshed at "
                               "each block's first step (Fast-dLLM): 'prefix' computes the block "
                               "and everything after it, 'dual' only the block; 'none'.")
  cache_refresh: int = _option(0, "With --cache: also refresh the cache every this many steps "
                                  "of a block (1: every step, so nothing is stale; 0: at block "
                                  "starts only).")
  # Set by `samplers.generate` (blocks_from='prompt'): the most positions a row of the canvas
  # generates after its prompt; 0 = the canvas length.
  generation_length: int = 0

  def __post_init__(self):
    """Each message starts with the option's name (the command line adds its dashes)."""
    if not isinstance(self.steps, int) or self.steps <= 0:
      raise DlmError(f"steps must be positive, got {self.steps!r}")
    for key in ("block_length", "top_k"):
      if not isinstance(getattr(self, key), int) or getattr(self, key) < 0:
        raise DlmError(f"{key} must be >= 0, got {getattr(self, key)!r}")
    if not self.temperature >= 0:
      raise DlmError(f"temperature must be >= 0, got {self.temperature!r}")
    if not 0 < self.top_p <= 1:
      raise DlmError(f"top_p must be in (0, 1], got {self.top_p!r}")
    if not isinstance(self.draft_length, int) or self.draft_length < 1:
      raise DlmError(f"draft_length must be >= 1, got {self.draft_length!r}")
    if not 0.0 <= self.threshold <= 1.0:
      raise DlmError(f"threshold must be in (0, 1] (0: off), got {self.threshold!r}")
    if not self.factor >= 0.0:
      raise DlmError(f"factor must be positive (0: off), got {self.factor!r}")
    if self.threshold and self.factor:
      raise DlmError("threshold and factor are two rules for the same choice: give one")
    if not isinstance(self.cache_refresh, int) or self.cache_refresh < 0:
      raise DlmError(f"cache_refresh must be >= 0, got {self.cache_refresh!r}")
    for key, allowed in (("grid", GRIDS), ("readout", READOUTS), ("reveal", REVEALS),
                         ("blocks_from", BLOCK_STARTS), ("cache", CACHES)):
      if getattr(self, key) not in allowed:
        raise DlmError(f"{key} must be one of {allowed}, got {getattr(self, key)!r}")


# The settings a user chooses (flags of sample.py and dlm.evaluate, keywords of `dlm.sample`).
OPTIONS = tuple(f.name for f in dataclasses.fields(SamplerConfig) if "help" in f.metadata)


class CachedDenoiser(NamedTuple):
  """A denoiser that keeps keys and values (Fast-dLLM's caches): `empty(batch, length)` is an
  empty cache; `window(z, t, positions, cache, mask) -> (logits, cache)` denoises the tokens z
  (batch, s) at canvas `positions` with per-token time t against the cache, whose entries at
  those positions it replaces; `mask` (batch, 1, s, length) are the canvas keys each sees.
  `shifted`: its output at i predicts token i + 1 (Dream), realigned within the window."""
  empty: Callable[[int, int], Any]
  window: Callable[..., tuple[jax.Array, Any]]
  shifted: bool = False


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


GENERATION = ("generation length", " (the positions after the prompt; blocks start at its end): "
              "ask for a multiple with new_tokens, or count blocks from position 0 with "
              "blocks_from=canvas")


def block_plan(length: int, sampling: SamplerConfig, what: str = "sample length",
               hint: str = "") -> tuple[int, int, int]:
  """(number of blocks, block length, steps per block) for `length` positions in blocks;
  checks that they divide evenly (`hint` follows the message)."""
  block = sampling.block_length or length
  if length % block:
    raise DlmError(f"block_length={block} does not divide the {what} {length}{hint}")
  blocks = length // block
  if sampling.steps <= 0 or sampling.steps % blocks:
    raise DlmError(f"steps={sampling.steps} must be a positive multiple of the {blocks} blocks")
  return blocks, block, sampling.steps // blocks


def prompt_ends(given) -> jax.Array:
  """Each row's first position to generate (batch,): the end of its prompt (the length for a
  row with nothing to generate)."""
  todo = ~given
  return jnp.where(jnp.any(todo, axis=1), jnp.argmax(todo, axis=1), given.shape[1])


def generation_length(given) -> int:
  """The longest span of a canvas row from its prompt end to its last position to generate
  (given padding or an infilling suffix after it is not generated): what blocks cut."""
  todo = ~np.asarray(jax.device_get(given), bool)
  if not todo.any():
    return 0
  rows = todo[todo.any(axis=1)]
  first = rows.argmax(axis=1)
  last = rows.shape[1] - rows[:, ::-1].argmax(axis=1)
  return int((last - first).max())


def block_layout(given, sampling: SamplerConfig):
  """(block_of (batch, length), blocks, block length, steps per block, first step).

  `blocks_from='prompt'` (LLaDA's `generate`): row r's block b is the positions
  [e_r + b B, e_r + (b + 1) B) after its prompt end e_r, and the prompt is block -1; the
  `generation_length` G (the longest row's) is cut into G / B blocks of `steps / blocks` steps
  each, so a row with a longer prompt has nothing left in the last ones. `'canvas'`: blocks of
  B positions from position 0, the leading blocks that hold only prompt skipped."""
  batch, length = given.shape
  if sampling.blocks_from == "canvas":
    blocks, block, per_block = block_plan(length, sampling)
    block_of = jnp.broadcast_to(jnp.arange(length) // block, (batch, length))
    return block_of, blocks, block, per_block, first_step(given, block, per_block)
  generated = sampling.generation_length or length
  blocks, block, per_block = block_plan(generated, sampling, *GENERATION)
  ends = prompt_ends(given)[:, None]
  position = jnp.arange(length)[None, :]
  block_of = jnp.where(position >= ends, (position - ends) // block, -1)
  return block_of, blocks, block, per_block, jnp.int32(0)


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


def first_step(given, block_len: int, per_block: int) -> jax.Array:
  """The step a block-wise sampler starts at: that of the first block with a position to
  generate in any row. Earlier blocks (a prompt's) would reveal nothing, so they cost no pass
  and no NFE; a canvas with nothing to generate starts past the last step."""
  todo = jnp.any(~given, axis=0)
  start = jnp.argmax(todo) // block_len * per_block
  return jnp.where(jnp.any(todo), start, given.shape[1] // block_len * per_block).astype(jnp.int32)


def block_times(t_current, block_of, current_block, given):
  """Per-token time: given and finished blocks 0, the current block t, later blocks 1;
  `block_of` per position (length,) or per row (batch, length)."""
  block_of = jnp.broadcast_to(block_of, given.shape)
  chex.assert_rank(given, 2)
  t = jnp.where(block_of < current_block, 0.0, jnp.where(block_of > current_block, 1.0,
                                                          t_current))
  return jnp.where(given, 0.0, t).astype(jnp.float32)


# The registry ------------------------------------------------------------------------------

Sampler = Callable[[Any, SamplerConfig, jax.Array, Canvas, Any], Samples]


@dataclasses.dataclass(frozen=True)
class Registered:
  family: str
  fn: Sampler
  check: Callable[[Any, SamplerConfig, Canvas], None] | None = None  # before tracing


_SAMPLERS: dict[str, Registered] = {}


def register(family: str, name: str, check=None):
  """Decorator: `fn(model, sampling, rng, canvas, times) -> Samples` samples `family`'s models as
  `--sampler=name`. Names are unique across families; a family's first is its default.
  `check(model, sampling, canvas)` raises DlmError on settings the sampler cannot honour, before
  anything is traced (model and canvas are None when only the settings are known)."""

  def add(fn: Sampler) -> Sampler:
    if name in _SAMPLERS and _SAMPLERS[name].fn is not fn:
      raise ValueError(f"a sampler named {name!r} is already registered")
    _SAMPLERS[name] = Registered(family, fn, check)
    return fn

  return add


def registered(name: str) -> Registered:
  if name not in _SAMPLERS:
    raise DlmError(f"unknown sampler {name!r}; choose one of {', '.join(names())}")
  return _SAMPLERS[name]


def names(family: str | None = None) -> tuple[str, ...]:
  """Every registered sampler's name, or one family's (its default first)."""
  return tuple(n for n, r in _SAMPLERS.items() if family is None or r.family == family)
