"""How a released architecture's tensors map onto dlm's backbone: one `Arch` record per
architecture, one `Tensor` per Hugging Face tensor.

A `Tensor` names its HF tensor, its expected HF shape, the dlm parameter it fills
(`net/blocks/0/attn/wqkv`), where inside that parameter it goes (`index`: q, k and v share one
fused parameter) and whether it is a torch `Linear` weight (stored (out, in), transposed to dlm's
(in, ..., out)) or already (in, out) (GPT-2's `Conv1D`, embeddings, vectors). The same record
maps both ways (`to_dlm`, `to_hf`), so a round trip is exact by construction and each
architecture is written once.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

from dlm.errors import DlmError


@dataclasses.dataclass(frozen=True)
class Tensor:
  name: str  # the HF tensor name
  shape: tuple  # its HF shape
  path: str  # the dlm parameter it fills
  index: tuple = ()  # where in that parameter (a fused q/k/v or gate/up slot)
  linear: bool = False  # a torch Linear weight (out, in): transposed

  def to_dlm(self, array: np.ndarray, slot_shape: tuple) -> np.ndarray:
    if self.linear:
      array = array.T
    return np.ascontiguousarray(array.reshape(slot_shape))  # one copy, laid out for writing

  def to_hf(self, slot: np.ndarray) -> np.ndarray:
    if self.linear:
      out, inp = self.shape
      return np.ascontiguousarray(slot.reshape(inp, out).T)
    return slot.reshape(self.shape)


@dataclasses.dataclass(frozen=True)
class Arch:
  """A released architecture.

  name          `--arch` of `python -m dlm.convert`
  model_types   the `model_type` values of its `config.json`
  config        (hf_config) -> dlm config overrides {'model.width': 4096, ...}; raises
                DlmError on a setting dlm cannot express
  tensors       (hf_config) -> [Tensor]: every tensor of the checkpoint
  ignored       (name) -> True for stored non-parameters (GPT-2's causal-mask buffers, rotary
                caches, a tied head's copy of the embedding)
  rename        (name) -> the name `tensors` uses (GPT-2 files with or without `transformer.`)
  roles         (hf_config, tokenizer_config, vocab) -> {'mask': token, 'bos': ..., 'eos': ...,
                'pad': ...} and 'stop': [tokens ending a chat turn]
                The key 'context' (not a config key) is the model's context length.
  hf_config     (dlm config, embedding rows, role ids) -> config.json for `--to_hf`; None if
                the HF side cannot express dlm's models in this layout
  expressible   (dlm config) -> '' if `--to_hf` can write this model, else why not
  tokenizer     (directory, tokenizer_config) -> a `tokenizers.Tokenizer` built from the
                release's own files when it ships no tokenizer.json (Dream), or None
  """

  name: str
  model_types: tuple[str, ...]
  config: Callable[[dict], dict]
  tensors: Callable[[dict], list[Tensor]]
  roles: Callable[[dict, dict, dict], dict]
  ignored: Callable[[str], bool] = lambda name: False
  rename: Callable[[str], str] = lambda name: name
  hf_config: Callable | None = None
  expressible: Callable[[object], str] = lambda config: ""
  tokenizer: Callable[[str, dict], object] | None = None


def get(hf: dict, key: str, *alternatives: str, default=None, required: bool = True):
  """A config.json value under `key` or one of its alternative names."""
  for k in (key, *alternatives):
    if k in hf and hf[k] is not None:
      return hf[k]
  if default is not None or not required:
    return default
  raise DlmError(f"config.json lacks {key!r}")


def refuse(hf: dict, key: str, allowed, what: str) -> None:
  """A DlmError if config.json sets `key` to something other than `allowed` (a value or a
  tuple of values); an absent key is allowed."""
  allowed = allowed if isinstance(allowed, tuple) else (allowed,)
  value = hf.get(key, allowed[0])
  if value not in allowed:
    raise DlmError(f"config.json has {key}={value!r}: {what} is not supported")


def role_token(vocab_by_id: dict, token_id, what: str) -> str:
  if token_id not in vocab_by_id:
    raise DlmError(f"config.json's {what} {token_id} is not in the tokenizer")
  return vocab_by_id[token_id]


def id_roles(hf: dict, tokenizer_config: dict, vocab_by_id: dict,
             stops: tuple[str, ...] = ()) -> dict:
  """Roles of a model with a mask token: mask from config.json's `mask_token_id`; bos, eos and
  pad as tokenizer_config.json names them (what its chat template is rendered with), else
  config.json's `*_token_id` (bos and pad default to eos); the `stops` the tokenizer has."""
  names = set(vocab_by_id.values())

  def named(role: str) -> str:
    token = tokenizer_config.get(f"{role}_token")
    token = token.get("content") if isinstance(token, dict) else token
    return token if isinstance(token, str) and token in names else ""

  out = {"mask": role_token(vocab_by_id, get(hf, "mask_token_id"), "mask_token_id"),
         "eos": named("eos") or role_token(vocab_by_id, get(hf, "eos_token_id"),
                                           "eos_token_id")}
  for role in ("bos", "pad"):
    token_id = hf.get(f"{role}_token_id")
    out[role] = named(role) or (out["eos"] if token_id is None else role_token(
        vocab_by_id, token_id, f"{role}_token_id"))
  out["stop"] = [t for t in stops if t in names]
  return out


def slot_shape(param_shape: tuple, index: tuple) -> tuple:
  """The shape of `index` into a parameter of `param_shape` (nothing allocated)."""
  return np.broadcast_to(np.empty((), np.bool_), param_shape)[index].shape if index else tuple(
      param_shape)


def check_cover(tensors: list[Tensor], shapes: dict[str, tuple]) -> None:
  """`shapes`: dlm parameter path -> shape."""
  # Every dlm parameter is filled exactly once by the tensors' slots (a layout error is a
  # bug in an Arch, caught before any tensor is read).
  filled: dict[str, int] = {}
  for t in tensors:
    if t.path not in shapes:
      raise DlmError(f"tensor {t.name} maps to {t.path}, which this model does not have")
    size = math.prod(slot_shape(shapes[t.path], t.index))
    if size != math.prod(t.shape):
      raise DlmError(f"tensor {t.name} {t.shape} does not fit {t.path}{list(t.index)} "
                     f"{slot_shape(shapes[t.path], t.index)}")
    filled[t.path] = filled.get(t.path, 0) + size
  for path, shape in shapes.items():
    if filled.get(path, 0) != math.prod(shape):
      raise DlmError(f"dlm parameter {path} {shape} is not filled by the checkpoint's tensors")
