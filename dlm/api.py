"""The Python API: load a workdir, generate text from it.

    import dlm

    run = dlm.load("runs/quickstart")
    for text in dlm.generate(run, ["The json module", "Return the"], sampler="low_confidence",
                             steps=64, temperature=0.0):
      print(text)

A workdir is all that is needed (its checkpoint holds the config and the tokenizer); any family
samples through its own samplers (the default: the family's first). Nothing is printed but what
the caller prints.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax

from dlm import samplers, sharding
from dlm.errors import DlmError
from dlm.samplers import text as sample_text
from dlm.train import restore


@dataclasses.dataclass(frozen=True)
class Loaded:
  """A workdir's model, ready to sample: what `load` returns and `generate` takes."""

  config: Any  # the run's config (ml_collections.ConfigDict)
  tokenizer: Any  # dlm.data.tokenizer.Tokenizer
  model: Any  # the family's nnx.Module, parameters on `mesh`
  step: int  # the checkpoint's step
  mesh: jax.sharding.Mesh

  @property
  def family(self) -> str:
    return self.config.model.family


def load(workdir: str, *, step: int | None = None, params: str = "ema",
         mesh: jax.sharding.Mesh | None = None) -> Loaded:
  """The model of a workdir's checkpoint (the newest intact one unless `step`), its EMA or
  raw `params`, placed on `mesh` (default: data parallel over all devices)."""
  mesh = mesh or sharding.make_mesh((-1, 1, 1))
  config, tokenizer, model, step = restore.load(workdir, params, step, mesh)
  return Loaded(config, tokenizer, model, step, mesh)


def sampler_config(family: str, sampler: str | None = None, **options) -> samplers.SamplerConfig:
  """SamplerConfig of a named sampler (default: the family's first) with `options`
  (`samplers.OPTIONS`: steps, temperature, top_k, top_p, block_length, cfg_scale, ...); unknown
  ones are an error."""
  unknown = sorted(set(options) - set(samplers.OPTIONS))
  if unknown:
    raise DlmError(f"unknown sampler option(s) {unknown}; options are {list(samplers.OPTIONS)}")
  return samplers.SamplerConfig(name=sampler or samplers.default_sampler(family), **options)


def sample(run: Loaded, prompts: str | Sequence[str] | None = None, *, num_samples: int = 1,
           sampler: str | None = None, length: int = 0, seed: int = 0, batch_size: int = 0,
           infill: str | None = None, source: str | None = None, times=None,
           progress: bool = False, chat: bool = False, system: str | None = None,
           new_tokens: int = 0, **options) -> list[dict]:
  """Samples as records (`text`, `generated`, `tokens`, `full_tokens`, `given`,
  `revealed_at`, `nfe`): one per prompt of a list, or `num_samples` continuing one prompt (or
  an `infill` template, or a pair model's `source`, or nothing). `length` 0 is the model's
  training length; `options` are the sampler's (see `sampler_config`). With `chat`, each
  prompt is a user message (after the `system` message, if any) rendered by the model's chat
  template (`data.tokenizer.chat_template`), and the answer follows it. `new_tokens` > 0:
  each prompt's canvas is the prompt and that many positions to generate (LLaDA's
  `gen_length`; shorter rows padded after them with given pad tokens), instead of `length`."""
  sampling = sampler_config(run.family, sampler, **options)
  data = run.config.data
  length = length or data.seq_len
  if chat:
    if prompts is None or infill is not None or source is not None:
      raise DlmError("chat needs a prompt (and no infill template or source)")
    template = chat_template(run.config)
    one = lambda p: sample_text.chat_prompt(run.tokenizer, template, p, system)  # noqa: E731
    prompts = [one(p) for p in prompts] if isinstance(prompts, (list, tuple)) else one(prompts)
    data = _no_bos(data)
  if new_tokens < 0:
    raise DlmError(f"new_tokens must be >= 0, got {new_tokens}")
  if new_tokens:
    if prompts is None or infill is not None or source is not None:
      raise DlmError("new_tokens counts the positions after a prompt: give a prompt")
    many = isinstance(prompts, (list, tuple))
    rows = sample_text.prompt_rows(run.tokenizer, prompts if many else [prompts], new_tokens,
                                   data.add_bos)
    if not many:
      rows = rows * num_samples
  elif isinstance(prompts, (list, tuple)):
    rows = [sample_text.canvas_template(run.tokenizer, run.family, length=length, prompt=p,
                                        source_len=data.source_len, add_bos=data.add_bos,
                                        max_length=data.seq_len) for p in prompts]
  else:
    if num_samples <= 0:
      raise DlmError(f"num_samples must be positive, got {num_samples}")
    rows = [sample_text.canvas_template(run.tokenizer, run.family, length=length,
                                        prompt=prompts, infill=infill, source=source,
                                        source_len=data.source_len, add_bos=data.add_bos,
                                        max_length=data.seq_len)] * num_samples
  return sample_text.fill(run.model, run.tokenizer, sampling, rows, seed=seed,
                          batch_size=batch_size, mesh=run.mesh, times=times, progress=progress)


def chat_template(config) -> str:
  """A config's chat template; a DlmError if it has none (`chat` needs an instruct model)."""
  template = config.data.tokenizer.chat_template
  if not template:
    raise DlmError("this model has no chat template (data.tokenizer.chat_template is empty): "
                   "chat needs an instruct model converted with its tokenizer_config.json")
  return template


def _no_bos(data):
  """The data section with `add_bos` off (a chat template writes its own bos)."""
  data = data.copy_and_resolve_references()
  data.add_bos = False
  return data


def generate(run: Loaded, prompts: str | Sequence[str] | None = None, *, num_samples: int = 1,
             sampler: str | None = None, **options) -> list[str]:
  """Texts (each prompt with what follows it, to the first generated eos or stop token); see
  `sample` (`chat=True`: instruct models)."""
  return [r["text"] for r in sample(run, prompts, num_samples=num_samples, sampler=sampler,
                                    **options)]
