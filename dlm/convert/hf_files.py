"""A Hugging Face model directory, read and written: `config.json`, the weights as one
`model.safetensors` or as shards `model-0000x-of-0000y.safetensors` listed by
`model.safetensors.index.json`, and `tokenizer.json` with `tokenizer_config.json`.

Tensors are read one at a time from memory-mapped files (`safetensors.safe_open`, mapped only
while a tensor is copied out), so reading a model holds no more than the tensor being converted
besides what the caller keeps. Every
problem with the directory is a `DlmError` naming the file (no config, a shard named in the
index that is missing, a file that is not safetensors).
"""

from __future__ import annotations

import json
import os
from typing import Iterator

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from dlm.errors import DlmError

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


def read_json(directory: str, name: str, required: bool = True) -> dict:
  path = os.path.join(directory, name)
  if not os.path.isfile(path):
    if required:
      raise DlmError(f"{directory!r} has no {name}: give a Hugging Face model directory")
    return {}
  try:
    with open(path, encoding="utf-8") as f:
      value = json.load(f)
  except (OSError, ValueError) as e:
    raise DlmError(f"{path} is not readable JSON ({e})") from None
  if not isinstance(value, dict):
    raise DlmError(f"{path} does not hold a JSON object")
  return value


class Weights:
  """The tensors of a model directory by name: `names`, `shape(name)`, `get(name)` (a numpy
  array in the file's dtype; bfloat16 as `ml_dtypes.bfloat16`)."""

  def __init__(self, directory: str):
    self.directory = directory
    if not os.path.isdir(directory):
      raise DlmError(f"{directory!r} is not a directory")
    index = os.path.join(directory, INDEX)
    if os.path.isfile(index):
      weight_map = read_json(directory, INDEX).get("weight_map")
      if not isinstance(weight_map, dict) or not weight_map:
        raise DlmError(f"{index} has no weight_map")
      files = sorted(set(weight_map.values()))
      missing = [f for f in files if not os.path.isfile(os.path.join(directory, f))]
      if missing:
        raise DlmError(f"{directory!r} lacks {missing[0]}, a shard named in {INDEX}"
                       + (f" ({len(missing)} missing)" if len(missing) > 1 else ""))
    elif os.path.isfile(os.path.join(directory, SINGLE)):
      files = [SINGLE]
    else:
      raise DlmError(f"{directory!r} has neither {SINGLE} nor {INDEX} (only safetensors "
                     "weights are read; convert a pytorch_model.bin with the HF tools first)")
    self._where: dict[str, str] = {}
    self._shapes: dict[str, tuple] = {}
    for name in files:
      with self._open(name) as handle:
        for key in handle.keys():
          self._where[key] = name
          self._shapes[key] = tuple(handle.get_slice(key).get_shape())

  def _open(self, name: str):
    path = os.path.join(self.directory, name)
    try:
      return safe_open(path, framework="np")
    except Exception as e:  # safetensors raises its own error types
      raise DlmError(f"{path} is not a readable safetensors file ({e})") from None

  @property
  def names(self) -> list[str]:
    return list(self._where)

  def shape(self, name: str) -> tuple:
    return self._shapes[name]

  def get(self, name: str) -> np.ndarray:
    """The tensor, copied out of its file; the file is mapped only for the copy, so pages read
    earlier do not stay in the process's memory."""
    with self._open(self._where[name]) as handle:
      return handle.get_tensor(name)


def write_weights(directory: str, tensors: Iterator[tuple[str, np.ndarray]],
                  shard_bytes: int = 4 << 30) -> list[str]:
  """Writes `(name, array)` pairs as safetensors shards of at most about `shard_bytes` each,
  with `model.safetensors.index.json` when there is more than one (the layout
  `save_pretrained` writes); returns the files written. A shard is written as soon as it is
  full, so at most one shard of arrays is held (when `tensors` makes them lazily)."""
  pending: list[tuple[str, np.ndarray]] = []
  parts: list[tuple[str, list[str]]] = []  # (temporary file, its tensors)
  size = total = 0

  def flush():
    part = os.path.join(directory, f".part-{len(parts):05d}.safetensors")
    save_file(dict(pending), part, metadata={"format": "pt"})
    parts.append((part, [name for name, _ in pending]))

  for name, array in tensors:
    if pending and size + array.nbytes > shard_bytes:
      flush()
      pending, size = [], 0
    pending.append((name, np.ascontiguousarray(array)))
    size += array.nbytes
    total += array.nbytes
  flush()
  pending = []
  written, weight_map = [], {}
  for number, (part, names) in enumerate(parts, 1):
    file = SINGLE if len(parts) == 1 else f"model-{number:05d}-of-{len(parts):05d}.safetensors"
    os.replace(part, os.path.join(directory, file))
    written.append(file)
    weight_map.update({name: file for name in names})
  if len(parts) > 1:
    with open(os.path.join(directory, INDEX), "w", encoding="utf-8") as f:
      json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    written.append(INDEX)
  return written
