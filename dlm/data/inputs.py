"""What the trainer, the sampler and the inspection command call: tokenizer and batch iterators.

`load_tokenizer(config.data)` returns the configured tokenizer: the file at
`data.tokenizer.path`, or a byte-level BPE trained once on the training split and cached next
to the prepared dataset. `train_iterator` / `eval_iterator` return global batches on a mesh.

With `data.source_feature` set the dataset is read as (source, target) pairs
(`data.target_feature`): `open_pairs` gives them random access (evaluation, sampling prompts),
the iterators give one row per pair (see `pipeline`), and the BPE learns from both sides.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import jax

from dlm.data import pipeline, sources
from dlm.data.tokenizer import Tokenizer
from dlm.errors import DlmError


def _special_overrides(tcfg) -> dict[str, str]:
  return {k: v for k, v in dict(tcfg.special_tokens).items() if v}


@dataclasses.dataclass
class Pairs(Sequence[tuple[str, str]]):
  """The (source, target) texts of one split, random access (a view over `sources.Documents`)."""

  docs: sources.Documents  # reads the source feature
  target_feature: str

  @property
  def name(self) -> str:
    return self.docs.name

  def __len__(self) -> int:
    return len(self.docs)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return [self[i] for i in range(*index.indices(len(self)))]
    if not -len(self) <= index < len(self):
      raise IndexError(f"pair {index} of {len(self)}")
    example = self.docs.source[index % len(self)]
    return (example[self.docs.feature].decode("utf-8"),
            example[self.target_feature].decode("utf-8"))

  def __iter__(self):
    return (self[i] for i in range(len(self)))

  def record(self, index: int) -> dict[str, str]:
    """All text features of one pair (`source`, `target`, `path`, ...)."""
    return self.docs.record(index % len(self))


def open_pairs(data_cfg, split: str) -> Pairs:
  """Prepares the dataset if needed and returns one split's (source, target) pairs."""
  d = data_cfg
  if not d.source_feature:
    raise DlmError("data.source_feature is empty: the dataset is unconditional text, not "
                   "(source, target) pairs")
  features = sources.builder(d).info.features
  for key in ("source_feature", "target_feature"):
    if d[key] not in features:
      raise DlmError(f"dataset {d.dataset!r} has no feature {d[key]!r} (features: "
                     f"{sorted(features)}); set data.{key}")
  return Pairs(sources.open_split(d, split, feature=d.source_feature), d.target_feature)


def bpe_cache_path(data_cfg) -> str:
  b = sources.builder(data_cfg)
  t = data_cfg.tokenizer
  name = b.info.full_name.replace("/", "_").replace(":", "_")
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
    return Tokenizer.from_file(t.path, t.num_reserved_pads, _special_overrides(t))
  path = bpe_cache_path(data_cfg)
  if not os.path.exists(path):
    if jax.process_index() == 0:
      with sources.file_lock(path):  # another process sharing the data directory may be at it
        if not os.path.exists(path):
          texts, n = _bpe_texts(data_cfg)
          tok = Tokenizer.train_bpe(texts, t.vocab_size, t.num_reserved_pads, length=n)
          tok.save(path)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

      multihost_utils.sync_global_devices("dlm-tokenizer-trained")
  return Tokenizer.from_file(path, t.num_reserved_pads, _special_overrides(t))


def _bpe_texts(data_cfg):
  """The BPE's training texts and their count: the train split's first documents (or pairs,
  both sides), `data.tokenizer.train_documents` of them (0 = all)."""
  limit = data_cfg.tokenizer.train_documents
  if data_cfg.source_feature:
    pairs = open_pairs(data_cfg, data_cfg.train_split)
    n = min(len(pairs), limit) if limit else len(pairs)
    return (text for i in range(n) for text in pairs[i]), 2 * n
  docs = sources.open_split(data_cfg, data_cfg.train_split)
  n = min(len(docs), limit) if limit else len(docs)
  return (docs[i] for i in range(n)), n


def _iterator(config, tokenizer, mesh, split: str, train: bool) -> pipeline.BatchIterator:
  d = config.data
  pipeline.check_seq_len(d.seq_len)
  per_process = pipeline.split_batch(config.train.batch_size, mesh, config.mesh.rules)
  pairs = bool(d.source_feature)
  docs = open_pairs(d, split) if pairs else sources.open_split(d, split)
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
      pairs=pairs,
      source_len=d.source_len,
      pretokenized=d.get("pretokenized", False),
      response_padding=d.response_padding,
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


def first_rows(config, tokenizer, rows: int, what: str) -> list[dict]:
  """The first `rows` training rows or more (whole local batches of numpy arrays, read on one
  device), for statistics fitted when a run starts (a PCA, per-channel standardisation)."""
  from dlm import sharding  # pylint: disable=g-import-not-at-top

  it = train_iterator(config, tokenizer, sharding.make_mesh((1, 1, 1), jax.devices()[:1]))
  out, seen = [], 0
  try:
    while seen < rows:
      out.append(it.next_local())
      seen += len(out[-1]["tokens"])
  except StopIteration:
    pass
  finally:
    it.close()
  if not out:
    raise DlmError(f"empty dataset: no training rows for {what}")
  return out
