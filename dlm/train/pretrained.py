"""Pretrained and frozen parameters: what a run starts from, and what it never trains.

Two sources fill parameters after the random initialisation (`state.create`), in order:
  1. the family's `pretrained(model, config, tokenizer, sources)` hook (dlm/registry.py), if it
     has one: a partial pure dict (e.g. a frozen Hugging Face encoder's weights under
     `encoder/`, statistics fitted on training rows, another stage's model), read from files
     named in the config and from `Sources` (training rows, other workdirs), so that families
     never import the data pipeline or the training code;
  2. `train.init_from`: another workdir's checkpoint (its EMA or raw parameters,
     `train.init_which`), placed under the path `train.init_into` ('' = the root, e.g.
     fine-tuning the same model; 'base' for a head trained on a frozen base model).
Every loaded array must have the shape of the parameter it replaces; parameters no source
names keep their random initialisation (e.g. new LoRA adapters, `model.lora_rank`, over a base
trained without them). A run with `train.init_from` and no `data.tokenizer.path` uses the
tokenizer stored with that workdir's checkpoint (`tokenizer`), so fine-tuning on another
dataset keeps the pretrained vocabulary.

Frozen parameters get no update and no optimizer moments (`optax.multi_transform` with
`set_to_zero`) and no gradient (`jax.lax.stop_gradient` in the train step, so their weight
gradients are never computed). A parameter is frozen if it is an `encoders.Frozen` variable,
if its path starts with one of the family's `frozen_prefixes`, or if its path ("a/b/kernel")
matches the regular expression `train.freeze`. They stay in the train state, so a checkpoint
still holds the whole model and `sample.py --workdir` needs nothing else.
"""

from __future__ import annotations

import dataclasses
import re

import jax
import numpy as np
from flax import nnx

from dlm import distributed, registry
from dlm.errors import DlmError
from dlm.models.layers import Frozen
from dlm.train import batches
from dlm.train import checkpoint as ckpt_lib
from dlm.train import restore


def _path_str(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def flat(tree) -> dict[str, object]:
  """'a/b/0/kernel' -> leaf."""
  return {_path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def unflat_like(tree, values: dict[str, object]):
  """`tree` with the leaves named in `values` replaced."""
  return jax.tree_util.tree_map_with_path(
      lambda p, x: values.get(_path_str(p), x), tree)


def frozen_mask(abstract_model: nnx.Module, params, pattern: str = ""):
  """A pytree of bools over `params`: True where the parameter is frozen (see module doc)."""
  frozen_vars = set(flat(nnx.to_pure_dict(nnx.state(abstract_model, Frozen))))
  prefixes = registry.get(abstract_model.family).frozen_prefixes
  try:
    regex = re.compile(pattern) if pattern else None
  except re.error as e:
    raise DlmError(f"train.freeze {pattern!r} is not a regular expression: {e}") from e

  def one(path, _):
    s = _path_str(path)
    return (s in frozen_vars or any(s == p or s.startswith(p + "/") for p in prefixes)
            or bool(regex and regex.search(s)))

  return jax.tree_util.tree_map_with_path(one, params)


@dataclasses.dataclass(frozen=True)
class Sources:
  """What a family's `pretrained` hook may read besides files named in the config."""

  config: object
  tokenizer: object

  def rows(self, n: int, what: str) -> list[dict]:
    """The first `n` training rows or more (local numpy batches), for statistics fitted when
    a run starts; `what` names them in the error of an empty dataset."""
    return batches.first_rows(self.config, self.tokenizer, n, what)

  @staticmethod
  def restore(workdir: str, which: str = "ema"):
    """(config, tokenizer, model, step) of another workdir (e.g. a frozen earlier stage)."""
    return restore.load(workdir, which=which)


def _from_workdir(workdir: str, which: str, into: str, tokenizer) -> dict[str, np.ndarray]:
  _, saved_tok, model, step = restore.load(workdir, which=which)
  if tokenizer is not None and saved_tok.fingerprint != tokenizer.fingerprint:
    raise DlmError(f"train.init_from {workdir!r} was trained with another tokenizer "
                   f"(vocabulary {saved_tok.vocab_size}, now {tokenizer.vocab_size})")
  values = flat(nnx.to_pure_dict(nnx.state(model)))
  distributed.say(f"dlm: initialising {into or 'the model'} from {workdir} (step {step}, "
                  f"{which})")
  prefix = into.strip("/") + "/" if into.strip("/") else ""
  return {prefix + k: np.asarray(jax.device_get(v)) for k, v in values.items()}


def tokenizer(config):
  """The tokenizer of `train.init_from`'s checkpoint when `data.tokenizer.path` is empty;
  None otherwise (the run loads or trains its own)."""
  if not config.train.init_from or config.data.tokenizer.path:
    return None
  ckpts = ckpt_lib.Checkpoints(config.train.init_from, read_only=True, async_save=False)
  try:  # the newest intact checkpoint's, as `restore.load` then reads its parameters
    return ckpts.first_intact(lambda s: ckpts.read_tokenizer(s, ckpts.read_config(s)))[1]
  finally:
    ckpts.close()


def values(abstract_model: nnx.Module, config, tokenizer) -> dict[str, np.ndarray]:
  """Path -> array for every parameter a pretrained source fills (host arrays)."""
  out: dict[str, np.ndarray] = {}
  hook = registry.get(abstract_model.family).pretrained
  if hook is not None:
    filled = hook(abstract_model, config, tokenizer, Sources(config, tokenizer))
    out.update({k: np.asarray(v) for k, v in flat(filled).items()})
  training = config.train
  if training.init_from:
    out.update(_from_workdir(training.init_from, training.init_which, training.init_into,
                             tokenizer))
  return out


def fill(params, loaded: dict[str, np.ndarray], shardings):
  """`params` with the loaded arrays placed in their shardings; shapes must match."""
  if not loaded:
    return params
  current, where = flat(params), flat(shardings)
  unknown = sorted(set(loaded) - set(current))
  if unknown:
    raise DlmError(f"pretrained parameter {unknown[0]} has no place in this model "
                   f"({len(unknown)} unmatched; check train.init_into)")
  placed = {}
  for path, value in loaded.items():
    if tuple(value.shape) != tuple(current[path].shape):
      raise DlmError(f"pretrained parameter {path} has shape {tuple(value.shape)}, the model "
                     f"needs {tuple(current[path].shape)}")
    placed[path] = jax.device_put(value.astype(current[path].dtype), where[path])
  return unflat_like(params, placed)
