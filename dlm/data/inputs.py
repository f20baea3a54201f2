"""What the trainer, the sampler and the inspection command call: tokenizer and batch iterators.

`load_tokenizer(config.data)` returns the configured tokenizer: the file at
`data.tokenizer.path`, or a byte-level BPE trained once on the training split and cached next
to the prepared dataset. `train_iterator` / `eval_iterator` return global batches on a mesh.
"""

from __future__ import annotations

import os

import jax

from dlm.data import pipeline, sources
from dlm.data.tokenizer import Tokenizer
from dlm.errors import DlmError


def _special_overrides(tcfg) -> dict[str, str]:
  return {k: v for k, v in dict(tcfg.special_tokens).items() if v}


def bpe_cache_path(data_cfg) -> str:
  b = sources.builder(data_cfg)
  t = data_cfg.tokenizer
  name = b.info.full_name.replace("/", "_").replace(":", "_")
  limit = f"-docs{t.train_documents}" if t.train_documents else ""
  return os.path.join(
      sources.data_dir(data_cfg), "dlm_tokenizers",
      f"{name}-{data_cfg.train_split}-bpe{t.vocab_size}-pads{t.num_reserved_pads}{limit}.json",
  )


def load_tokenizer(data_cfg) -> Tokenizer:
  """The configured tokenizer (trains and caches the BPE on first use)."""
  t = data_cfg.tokenizer
  if t.path:
    return Tokenizer.from_file(t.path, t.num_reserved_pads, _special_overrides(t))
  path = bpe_cache_path(data_cfg)
  if not os.path.exists(path):
    if jax.process_index() == 0:
      docs = sources.open_split(data_cfg, data_cfg.train_split)
      n = min(len(docs), t.train_documents) if t.train_documents else len(docs)
      tok = Tokenizer.train_bpe((docs[i] for i in range(n)), t.vocab_size,
                                t.num_reserved_pads, length=n)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      tok.save(path)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

      multihost_utils.sync_global_devices("dlm-tokenizer-trained")
  return Tokenizer.from_file(path, t.num_reserved_pads, _special_overrides(t))


def _iterator(config, tokenizer, mesh, split: str, train: bool) -> pipeline.BatchIterator:
  d = config.data
  pipeline.check_seq_len(d.seq_len)
  per_process = pipeline.split_batch(config.train.batch_size, mesh, config.mesh.rules)
  docs = sources.open_split(d, split)
  ds = pipeline.dataset(
      docs,
      tokenizer,
      seq_len=d.seq_len,
      batch_size=per_process,
      packing=d.packing,
      add_bos=d.add_bos,
      shuffle=train,
      seed=d.seed,
      num_epochs=None if train else 1,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
      prefetch=d.prefetch,
  )
  return pipeline.BatchIterator(ds, pipeline.batch_sharding(mesh, config.mesh.rules))


def train_iterator(config, tokenizer, mesh) -> pipeline.BatchIterator:
  """Endless, shuffled training batches (global `jax.Array`s on `mesh`)."""
  return _iterator(config, tokenizer, mesh, config.data.train_split, train=True)


def eval_iterator(config, tokenizer, mesh) -> pipeline.BatchIterator:
  """One pass over the evaluation split, in order, the last batch filled with empty rows."""
  if not config.data.eval_split:
    raise DlmError("data.eval_split is empty: there is no split to evaluate on")
  return _iterator(config, tokenizer, mesh, config.data.eval_split, train=False)
