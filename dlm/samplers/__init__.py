"""Every family's samplers behind one interface: `generate(model, cfg, rng, canvas)`.

| family | name | what |
|---|---|---|
| masked | `ancestral` | MD4/MDLM reverse posterior, one denoiser call per step |
| masked | `ancestral_cache` | the same samples, calling the denoiser only when a sequence reveals |
| masked | `low_confidence`, `random` | LLaDA remasking: k tokens per step, most confident (or random) |
| masked | `maskgit_plus`, `topk_margin`, `entropy` | Dream's confidence orders |
| continuous | `ddpm`, `ddim`, `euler_ode`, `euler_sde` | reverse Gaussian diffusion of embeddings |
| neodiff | `neodiff` | x0 prediction, predicted per-token times, re-noising |
| autoregressive | `autoregressive` | left to right |
| ccdd | `ccdd`, `ccdd_ddim` | GIDD posterior on tokens + DDPM (DDIM) on z, z guidance |
| cosmos | `cosmos_sde`, `cosmos_ddim` | reverse SDE (DDIM) over autoencoder latents, then decode |
| any_order | `assd`, `sequential` | AS-ARM: exact speculative decoding; one token per pass |
| joint_head | `adjust`, `marginal`, `exact` | ADJUST's sampler head, k + 1 tokens per full pass, and its baselines |

The masked samplers take semi-autoregressive blocks, temperature (Gumbel-max or inverse CDF,
float64 option), top-k, top-p, classifier-free guidance; every sampler takes prompts and
infilling (`Canvas`: given positions are never changed, time 0). Each is one `jax.lax` loop;
`generate` jits it over the model's parameters with the batch sharded over the mesh's data axes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from dlm.errors import DlmError
from dlm.samplers import ancestral as _ancestral
from dlm.samplers import any_order as _any_order
from dlm.samplers import autoregressive as _autoregressive
from dlm.samplers import ccdd as _ccdd
from dlm.samplers import confidence as _confidence
from dlm.samplers import continuous as _continuous
from dlm.samplers import latent as _latent
from dlm.samplers import joint as _joint
from dlm.samplers.ancestral import time_grid  # noqa: F401
from dlm.samplers.core import Canvas, SamplerConfig, Samples, blank_canvas  # noqa: F401

FAMILY_SAMPLERS = {
    "masked": ("ancestral", "ancestral_cache") + _confidence.ORDERS,
    "continuous": _continuous.CONTINUOUS,
    "neodiff": _continuous.NEODIFF,
    "autoregressive": _autoregressive.AUTOREGRESSIVE,
    "ccdd": _ccdd.CCDD,
    "cosmos": _latent.LATENT,
    "any_order": _any_order.ANY_ORDER,
    "joint_head": _joint.MODES,
}
SAMPLERS = tuple(n for names in FAMILY_SAMPLERS.values() for n in names)


def family_of(model) -> str:
  return model.family


def default_sampler(family: str) -> str:
  return FAMILY_SAMPLERS[family][0]


def run(denoise, schedule, cfg: SamplerConfig, rng, canvas: Canvas, mask_id: int) -> Samples:
  """Any sampler on a plain denoiser function `(z, t) -> logits`."""
  if cfg.name == "ancestral":
    return _ancestral.ancestral(denoise, schedule, cfg, rng, canvas, mask_id)
  if cfg.name == "ancestral_cache":
    return _ancestral.ancestral_cache(denoise, schedule, cfg, rng, canvas, mask_id)
  if cfg.name in _confidence.ORDERS:
    return _confidence.confidence(cfg.name, denoise, cfg, rng, canvas, mask_id)
  raise DlmError(f"{cfg.name!r} is not a masked-diffusion sampler; choose one of "
                 f"{', '.join(FAMILY_SAMPLERS['masked'])}")


def check(cfg: SamplerConfig, length: int, family: str = "masked") -> None:
  """Bad sampler settings as DlmErrors, before anything is traced."""
  if family not in FAMILY_SAMPLERS:
    raise DlmError(f"a {family} model does not generate text (a Cosmos autoencoder: train the "
                   "latent diffusion stage on it and sample that)")
  if cfg.name not in SAMPLERS:
    raise DlmError(f"unknown sampler {cfg.name!r}; choose one of {', '.join(SAMPLERS)}")
  if cfg.name not in FAMILY_SAMPLERS[family]:
    raise DlmError(f"sampler {cfg.name!r} does not sample {family} models; choose one of "
                   f"{', '.join(FAMILY_SAMPLERS[family])}")
  if family == "joint_head" and (cfg.block_length or cfg.cfg_scale):
    raise DlmError("the joint_head samplers take neither block_length nor cfg_scale")
  if cfg.grid not in ("uniform", "cosine"):
    raise DlmError(f"unknown time grid {cfg.grid!r}; expected 'uniform' or 'cosine'")
  if cfg.temperature < 0 or not 0 < cfg.top_p <= 1 or cfg.top_k < 0:
    raise DlmError("need temperature >= 0, 0 < top_p <= 1 and top_k >= 0")
  if cfg.float64 and not jax.config.jax_enable_x64:
    raise DlmError("float64 sampling needs jax_enable_x64 (sample.py --float64 sets it)")
  _any_order.check(cfg)
  from dlm.samplers.core import block_plan  # pylint: disable=g-import-not-at-top

  block_plan(length, cfg)


@functools.partial(jax.jit, static_argnames=("graphdef", "cfg"))
def _generate(graphdef, params, cfg: SamplerConfig, rng, canvas: Canvas, times) -> Samples:
  model = nnx.merge(graphdef, params)
  family = family_of(model)
  if family == "autoregressive":
    return _autoregressive.autoregressive(model, cfg, rng, canvas)
  if family == "continuous":
    return _continuous.embedding_sampler(model, cfg, rng, canvas, times)
  if family == "neodiff":
    return _continuous.neodiff_sampler(model, cfg, rng, canvas, times)
  if family == "ccdd":
    return _ccdd.ccdd_sampler(model, cfg, rng, canvas, times)
  if family == "cosmos":
    return _latent.latent_sampler(model, cfg, rng, canvas, model.t_min, times)
  if family == "any_order":
    return _any_order.generate(model, cfg, rng, canvas)
  if family == "joint_head":
    return _joint.joint(model, cfg, rng, canvas)
  length = canvas.tokens.shape[1]
  positions = jnp.broadcast_to(jnp.arange(length), canvas.tokens.shape)
  segments = jnp.ones_like(canvas.tokens)

  def denoise(z, t):
    return model.logits(z, t, segments, positions)

  return run(denoise, model.process.schedule, cfg, rng, canvas, model.process.mask_id)


def _times(cfg: SamplerConfig, times):
  """An explicit time grid (continuous families: 1 = t_0 > ... > t_steps = 0), checked."""
  if times is None:
    return None
  times = jnp.asarray(times, jnp.float32)
  if times.shape != (cfg.steps + 1,):
    raise DlmError(f"a time schedule of {times.shape[0]} points does not fit {cfg.steps} steps "
                   f"(needs {cfg.steps + 1})")
  return times


def _check_canvas(model, canvas: Canvas) -> None:
  if family_of(model) != "cosmos":
    return
  length = model.autoencoder.cfg.seq_len
  if canvas.tokens.shape[1] != length:
    raise DlmError(f"a Cosmos model decodes rows of exactly {length} tokens (its autoencoder's "
                   f"data.seq_len), not {canvas.tokens.shape[1]}")
  if bool(jnp.any(canvas.given)):
    raise DlmError("Cosmos samples whole rows from latent noise: prompts and infilling are not "
                   "supported")


def generate(model, cfg: SamplerConfig, rng, canvas: Canvas, times=None) -> Samples:
  """Samples from a model of any family (jit-compiled per model graph and settings); under
  `jax.set_mesh`, shard `canvas` over the batch axes to spread the batch over devices.
  `times`: an optional extrinsic time grid of `steps + 1` points (continuous families)."""
  check(cfg, canvas.tokens.shape[1], family_of(model))
  _check_canvas(model, canvas)
  graphdef, params = nnx.split(model)
  return _generate(graphdef, nnx.to_pure_dict(params), cfg, rng, canvas, _times(cfg, times))


def compiled(model, cfg: SamplerConfig, rng, canvas: Canvas, times=None):
  """`generate` compiled ahead of time for these shapes: returns `fn(rng) -> Samples`, so
  benchmarks time sampling without a warm-up run."""
  check(cfg, canvas.tokens.shape[1], family_of(model))
  _check_canvas(model, canvas)
  graphdef, params = nnx.split(model)
  params = nnx.to_pure_dict(params)
  times = _times(cfg, times)
  fn = _generate.lower(graphdef, params, cfg, rng, canvas, times).compile()
  return lambda key: fn(params, key, canvas, times)
