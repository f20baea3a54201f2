"""Every family's samplers behind one interface: `generate(model, sampling, rng, canvas)`.

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

Each module registers its samplers (`core.register`) under its family, one per file named for
the family (`ancestral` and `confidence` for the masked family); the registry maps a name to
`fn(model, sampling, rng, canvas, times)`. The masked samplers take semi-autoregressive blocks,
temperature (Gumbel-max or inverse CDF, float64 option), top-k, top-p, classifier-free
guidance; every sampler takes prompts and infilling (`Canvas`: given positions are never
changed, time 0). Each is one `jax.lax` loop; `generate` jits it over the model's parameters
with the batch sharded over the mesh's data axes.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from dlm.errors import DlmError
from dlm.samplers import (ancestral, any_order, autoregressive, ccdd, confidence,  # noqa: F401
                          continuous, core, cosmos, joint_head, neodiff)
from dlm.samplers.core import (OPTIONS, Canvas, SamplerConfig, Samples,  # noqa: F401
                               blank_canvas, block_plan, generation_length, names, registered)


def default_sampler(family: str) -> str:
  """A family's first registered sampler; a DlmError for a family without one."""
  available = names(family)
  if not available:
    raise DlmError(f"a {family} model does not generate text (a Cosmos autoencoder: train the "
                   "latent diffusion stage on it and sample that)")
  return available[0]


def run(denoise, schedule, sampling: SamplerConfig, rng, canvas: Canvas, mask_id: int) -> Samples:
  """Any masked-diffusion sampler on a plain denoiser function `(z, t) -> logits`."""
  if sampling.name == "ancestral":
    return ancestral.ancestral(denoise, schedule, sampling, rng, canvas, mask_id)
  if sampling.name == "ancestral_cache":
    return ancestral.ancestral_cache(denoise, schedule, sampling, rng, canvas, mask_id)
  if sampling.name in confidence.ORDERS:
    return confidence.confidence(sampling.name, denoise, sampling, rng, canvas, mask_id)
  raise DlmError(f"{sampling.name!r} is not a masked-diffusion sampler; choose one of "
                 f"{', '.join(names('masked'))}")


def check(sampling: SamplerConfig, length: int, family: str = "masked", model=None,
          canvas: Canvas | None = None) -> None:
  """Bad sampler settings as DlmErrors, before anything is traced."""
  default_sampler(family)  # a family that samples
  entry = registered(sampling.name)
  if entry.family != family:
    raise DlmError(f"sampler {sampling.name!r} does not sample {family} models; choose one of "
                   f"{', '.join(names(family))}")
  if sampling.float64 and not jax.config.jax_enable_x64:
    raise DlmError("float64 sampling needs jax_enable_x64 (sample.py --float64 sets it)")
  if entry.check is not None:
    entry.check(model, sampling, canvas)
  if (sampling.threshold or sampling.factor) and (
      sampling.name not in confidence.ORDERS or sampling.reveal != "even"):
    raise DlmError(f"threshold and factor choose how many tokens the confidence orders "
                   f"({', '.join(confidence.ORDERS)}) reveal; not with sampler "
                   f"{sampling.name!r} or reveal={sampling.reveal!r}")
  if sampling.cache != "none":
    if sampling.name not in confidence.ORDERS or sampling.reveal != "even":
      raise DlmError(f"cache={sampling.cache!r} reuses keys and values across the steps of "
                     f"semi-autoregressive blocks: the confidence orders "
                     f"({', '.join(confidence.ORDERS)}) have them, not sampler "
                     f"{sampling.name!r} or reveal={sampling.reveal!r}")
    if sampling.cfg_scale:
      raise DlmError(f"cache={sampling.cache!r} with cfg_scale is not supported")
    net_cfg = getattr(getattr(model, "net", None), "cfg", None)
    if net_cfg is not None and net_cfg.attention != "bidirectional":
      raise DlmError(f"cache={sampling.cache!r} needs a bidirectional backbone, not "
                     f"attention={net_cfg.attention!r}")
  if sampling.blocks_from == "prompt" and (canvas is not None or sampling.generation_length):
    block_plan(sampling.generation_length or generation_length(canvas.given), sampling,
               *core.GENERATION)
  else:
    block_plan(length, sampling)


@functools.partial(jax.jit, static_argnames=("graphdef", "sampling"))
def _generate(graphdef, params, sampling: SamplerConfig, rng, canvas: Canvas, times) -> Samples:
  return registered(sampling.name).fn(nnx.merge(graphdef, params), sampling, rng, canvas, times)


def _times(sampling: SamplerConfig, times):
  """An explicit time grid (continuous families: 1 = t_0 > ... > t_steps = 0), checked."""
  if times is None:
    return None
  times = jnp.asarray(times, jnp.float32)
  if times.shape != (sampling.steps + 1,):
    raise DlmError(f"a time schedule of {times.shape[0]} points does not fit "
                   f"{sampling.steps} steps (needs {sampling.steps + 1})")
  return times


def with_generation_length(sampling: SamplerConfig, canvas: Canvas) -> SamplerConfig:
  """`sampling` with the canvas's generation length set, where blocks start at the prompt
  (a static setting: canvases whose longest generation differs compile apart)."""
  if sampling.blocks_from != "prompt" or not sampling.block_length or (
      sampling.generation_length):
    return sampling
  return dataclasses.replace(sampling, generation_length=generation_length(canvas.given))


def generate(model, sampling: SamplerConfig, rng, canvas: Canvas, times=None) -> Samples:
  """Samples from a model of any family (jit-compiled per model graph and settings); under
  `jax.set_mesh`, shard `canvas` over the batch axes to spread the batch over devices.
  `times`: an optional extrinsic time grid of `steps + 1` points (continuous families)."""
  sampling = with_generation_length(sampling, canvas)
  check(sampling, canvas.tokens.shape[1], model.family, model, canvas)
  graphdef, params = nnx.split(model)
  return _generate(graphdef, nnx.to_pure_dict(params), sampling, rng, canvas,
                   _times(sampling, times))


def compiled(model, sampling: SamplerConfig, rng, canvas: Canvas, times=None):
  """`generate` compiled ahead of time for these shapes: returns `fn(rng) -> Samples`, so
  benchmarks time sampling without a warm-up run."""
  sampling = with_generation_length(sampling, canvas)
  check(sampling, canvas.tokens.shape[1], model.family, model, canvas)
  graphdef, params = nnx.split(model)
  params = nnx.to_pure_dict(params)
  times = _times(sampling, times)
  fn = _generate.lower(graphdef, params, sampling, rng, canvas, times).compile()
  return lambda key: fn(params, key, canvas, times)

