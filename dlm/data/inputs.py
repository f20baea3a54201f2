"""What the trainer, the sampler and the inspection command call: tokenizer and batch iterators.

`load_tokenizer(config.data)` returns the configured tokenizer: the file at
`data.tokenizer.path`, or a byte-level BPE trained once on the training split and cached next
to the prepared dataset. `documents` opens a split, `dataset` makes its grain dataset as the
config describes it;
`eval_iterator` returns the evaluation split's global batches on a mesh (training batches:
dlm/train/batches.py).

With `data.source_feature` set the dataset is read as (source, target) pairs
(`data.target_feature`): `open_pairs` gives them random access (evaluation, sampling prompts),
the iterators give one row per pair (see `pipeline`), and the BPE learns from both sides.
"""

from __future__ import annotations

import os

import jax
from jax.experimental import multihost_utils

from dlm.data import pipeline, sources, stream
from dlm.data.tokenizer import Tokenizer
from dlm.errors import DlmError


def _special_overrides(tcfg) -> dict[str, str]:
  return {k: v for k, v in dict(tcfg.special_tokens).items() if v}


def open_pairs(data_cfg, split: str) -> sources.Documents:
  """Prepares the dataset if needed and returns one split's (source, target) pairs."""
  if not data_cfg.source_feature:
    raise DlmError("data.source_feature is empty: the dataset is unconditional text, not "
                   "(source, target) pairs")
  return sources.open_split(data_cfg, split,
                            feature=(data_cfg.source_feature, data_cfg.target_feature),
                            keys=("source_feature", "target_feature"))


def bpe_cache_path(data_cfg) -> str:
  t = data_cfg.tokenizer
  name = sources.dataset_name(data_cfg).replace("/", "_").replace(":", "_")
  if data_cfg.source_feature:  # trained on both sides of the pairs
    name += f"-{data_cfg.source_feature}+{data_cfg.target_feature}"
  limit = f"-docs{t.train_documents}" if t.train_documents else ""
  return os.path.join(
      sources.data_dir(data_cfg), "dlm_tokenizers",
      f"{name}-{data_cfg.train_split}-bpe{t.vocab_size}-pads{t.num_reserved_pads}{limit}.json",
  )


def load_tokenizer(data_cfg) -> Tokenizer:
  """The configured tokenizer (trains and caches the BPE on first use)."""
  t = data_cfg.tokenizer
  if t.path:
    return Tokenizer.from_file(t.path, t.num_reserved_pads, _special_overrides(t),
                              tuple(t.get("stop_tokens", ())))
  path = bpe_cache_path(data_cfg)
  if not os.path.exists(path):
    if jax.process_index() == 0:
      with sources.file_lock(path):  # another process sharing the data directory may be at it
        if not os.path.exists(path):
          texts, n = _bpe_texts(data_cfg)
          tok = Tokenizer.train_bpe(texts, t.vocab_size, t.num_reserved_pads, length=n)
          tok.save(path)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("dlm-tokenizer-trained")
  return Tokenizer.from_file(path, t.num_reserved_pads, _special_overrides(t),
                            tuple(t.get("stop_tokens", ())))


def _bpe_texts(data_cfg):
  """The BPE's training texts and their count: the train split's first documents (or pairs,
  both sides), `data.tokenizer.train_documents` of them (0 = all)."""
  limit = data_cfg.tokenizer.train_documents
  docs = documents(data_cfg, data_cfg.train_split)
  if isinstance(docs, stream.Stream):  # limit > 0 (config.validate checks)
    head = docs[:limit]
    docs, n = head, len(head)
  else:
    n = min(len(docs), limit) if limit else len(docs)
  if data_cfg.source_feature:
    return (text for i in range(n) for text in docs[i]), 2 * n
  return (docs[i] for i in range(n)), n


def documents(data_cfg, split: str) -> sources.Documents | stream.Stream:
  """One split's documents, prepared if needed (or streamed, `data.streaming`): (source,
  target) pairs with `data.source_feature`, else texts."""
  if data_cfg.source_feature:
    return open_pairs(data_cfg, split)
  return sources.open_split(data_cfg, split)


def dataset(config, tokenizer, docs: sources.Documents, *, train: bool, batch_size: int,
            process_index: int, process_count: int):
  """The grain dataset of a split's `documents` as a config describes it (the one place the
  `data` section's keys reach `pipeline.dataset`): `train` shuffles and repeats without end;
  otherwise one pass in order, the last batch filled with empty rows. `process_index` of
  `process_count` takes documents i, i + n, ... (a process's shard, or a training stream)."""
  data = config.data
  return pipeline.dataset(
      docs, tokenizer, seq_len=data.seq_len, batch_size=batch_size, packing=data.packing,
      add_bos=data.add_bos, shuffle=train, seed=data.seed, num_epochs=None if train else 1,
      process_index=process_index, process_count=process_count, prefetch=data.prefetch,
      pairs=bool(data.source_feature), source_len=data.source_len,
      pretokenized=data.pretokenized, response_padding=data.response_padding)


def eval_iterator(config, tokenizer, mesh) -> pipeline.BatchIterator:
  """One pass over the evaluation split, in order, the last batch filled with empty rows
  (global `jax.Array`s on `mesh`; the training batches are dlm/train/batches.py's)."""
  if not config.data.eval_split:
    raise DlmError("data.eval_split is empty: there is no split to evaluate on")
  per_process = pipeline.split_batch(config.train.batch_size, mesh, config.mesh.rules)
  ds = dataset(config, tokenizer, documents(config.data, config.data.eval_split), train=False,
               batch_size=per_process, process_index=jax.process_index(),
               process_count=jax.process_count())
  return pipeline.BatchIterator(ds, pipeline.batch_sharding(mesh, config.mesh.rules))
