"""A random BERT checkpoint directory in Hugging Face layout (config.json, model.safetensors,
and all-MiniLM-L6-v2's tokenizer.json): a stand-in for a real encoder where its size is not
what a test checks."""

import json
import pathlib
import shutil

import numpy as np
from safetensors.numpy import save_file

from dlm.models import encoders


def write(path, config: encoders.BertConfig, prefix: str = "", drop: str | None = None,
          reshape: str | None = None, seed: int = 0) -> pathlib.Path:
  """Writes the checkpoint into `path` (`prefix` before every weight name; `drop` leaves one
  out and `reshape` gives one a wrong shape, for error tests) and returns it."""
  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  weights = {}
  for name, variable, transpose in encoders.hf_weight_targets(encoders.BertEncoder(config)):
    shape = tuple(variable[...].shape)
    weights[prefix + name] = rng.normal(size=shape[::-1] if transpose else shape).astype(
        np.float32)
  if drop:
    del weights[prefix + drop]
  if reshape:
    weights[prefix + reshape] = np.zeros((3,), np.float32)
  save_file(weights, str(path / encoders.WEIGHTS_FILE))
  (path / encoders.CONFIG_FILE).write_text(json.dumps(
      {**config.__dict__, "model_type": "bert", "position_embedding_type": "absolute"}))
  shutil.copy(encoders.default_model_dir() / encoders.TOKENIZER_FILE, path)
  return path
