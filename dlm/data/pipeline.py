"""The input pipeline on grain: tokenize, pack or pad, shard by process, batch, global arrays.

Each example is a dict of arrays of shape `(seq_len,)`:

* `tokens` (int32): token ids, `pad` where there is no token;
* `segment_ids` (int32): 1, 2, ... numbering the documents packed into the row, 0 on padding (so
  attention can be kept within a document, and the loss skips padding);
* `positions` (int32): the position of each token within its document's piece in this row;
* `given` (bool): the conditioning prefix of a (source -> target) pair, kept clean (never
  noised nor scored); all False for unconditional text and on batch-filling rows.

Packing (`data.packing="concat"`) joins the documents of the shard, each followed by `eos`,
and cuts the stream into rows of `seq_len` (grain's `ConcatThenSplitIterDataset`): no token is
lost or repeated within an epoch, a document may continue in the next row, and only the last
row of a finite epoch is padded. `data.packing="pad"` gives one document per row (sentence-
level data such as LM1B), a document longer than a row continuing over several rows.

Conditional data (`dataset(..., pairs=True)`, `data.source_feature` set) has one row per
(source, target) pair, never packed: `[bos] source [eos] target [eos] [eos] ...`. The source
keeps its first `source_len` tokens (`data.source_len`, 0 = `seq_len // 2`), the target is cut
to fit with at least one closing eos, and the rest of the row is eos: real tokens to predict
(LLaDA-style eos padding), so `segment_ids` is 1 on the whole row and `positions` counts 0 ..
seq_len-1. `given` is True on `[bos] source [eos]`. `pair_prompt` builds the same prefix as a
sampling canvas, the mask token everywhere else. Rainbow padding (`data.response_padding=
"rainbow"`, Kim et al. 2025) keeps one closing eos and fills the rest of the row with the
tokenizer's reserved pads cycling, `[bos] source [eos] target [eos] pad_0 pad_1 .. pad_{K-1}
pad_0 ..`: every pad position is still a real token to predict.

Documents are sharded before anything else: process (or stream) `i` of `n` reads documents
`i, i+n, ...`; training shuffles them with `data.seed`, anew each epoch. A grain iterator's
state (a small dict) saves and restores the exact position in the stream. A streamed split
(`stream.Stream`, `data.streaming`) is sharded by `datasets` and shuffled within windows of
`data.shuffle_window` documents instead (dlm/data/stream.py).
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import grain
import jax
import numpy as np

from dlm import config as config_lib
from dlm import sharding
from dlm.data import stream
from dlm.data.tokenizer import Tokenizer
from dlm.errors import DlmError

FEATURES = ("tokens", "segment_ids", "positions", "given")
# Documents tokenized ahead by `READ_THREADS` threads, at most `READ_AHEAD` waiting: grain's
# default (16 threads, 500 documents) holds 500 tokenized documents, which for a corpus of
# one 50 MB line (repeated each epoch) is tens of GB.
READ_THREADS, READ_AHEAD = 2, 4


class _Tokenize(grain.transforms.Map):
  """Document text -> token ids, with an optional leading bos and a closing eos."""

  def __init__(self, tokenizer: Tokenizer, add_bos: bool):
    self._tokenizer = tokenizer
    prefix = [tokenizer.bos_id] if add_bos else []
    self._prefix = np.asarray(prefix, np.int32)
    self._suffix = np.asarray([tokenizer.eos_id], np.int32)

  def map(self, text: str) -> dict[str, np.ndarray]:
    return {"tokens": np.concatenate([self._prefix, self._tokenizer.encode(text), self._suffix])}


class _PadChunks(grain.experimental.FlatMapTransform):
  """One document -> rows of `seq_len` (the last one padded)."""

  max_fan_out = 2**31 - 1

  def __init__(self, seq_len: int, pad_id: int):
    self._seq_len = seq_len
    self._pad_id = pad_id

  def flat_map(self, example: dict[str, np.ndarray]) -> Sequence[dict[str, np.ndarray]]:
    tokens = example["tokens"]
    rows = []
    for start in range(0, len(tokens), self._seq_len):
      piece = tokens[start:start + self._seq_len]
      n = len(piece)
      row = np.full((self._seq_len,), self._pad_id, np.int32)
      row[:n] = piece
      segment_ids = np.zeros((self._seq_len,), np.int32)
      segment_ids[:n] = 1
      positions = np.zeros((self._seq_len,), np.int32)
      positions[:n] = np.arange(n)
      rows.append({"tokens": row, "segment_ids": segment_ids, "positions": positions,
                   "given": np.zeros((self._seq_len,), bool)})
    return rows


def _from_packed(pad_id: int):
  def fn(example: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    segment_ids = example["tokens_segment_ids"]
    return {
        "tokens": np.where(segment_ids > 0, example["tokens"], pad_id).astype(np.int32),
        "segment_ids": segment_ids.astype(np.int32),
        "positions": example["tokens_positions"].astype(np.int32),
        "given": np.zeros(segment_ids.shape, bool),
    }

  return fn


class _IdRows(grain.transforms.Map):
  """A pre-tokenized document, a JSON object `{"tokens": [ids], ...}` of int lists of one
  length <= seq_len, -> one row; every other list becomes a row feature of its own (e.g. the
  reveal `order` of a joint-sampling trajectory, dlm/joint_data.py), padded with -1."""

  def __init__(self, seq_len: int, pad_id: int):
    self._seq_len = seq_len
    self._pad_id = pad_id

  def map(self, text: str) -> dict[str, np.ndarray]:
    try:
      record = json.loads(text)
      tokens = np.asarray(record["tokens"], np.int32)
      extra = {k: np.asarray(v, np.int32) for k, v in record.items() if k != "tokens"}
    except (ValueError, TypeError, KeyError) as e:
      raise DlmError("data.pretokenized: a document is not a JSON object with an int list "
                     f"'tokens' ({type(e).__name__}: {e})") from None
    n = len(tokens)
    if tokens.ndim != 1 or not 0 < n <= self._seq_len or any(
        v.shape != tokens.shape for v in extra.values()):
      raise DlmError(f"data.pretokenized: a document's lists must have one length in "
                     f"[1, data.seq_len={self._seq_len}], got {n} and "
                     f"{ {k: v.shape for k, v in extra.items()} }")
    row = {"tokens": np.full((self._seq_len,), self._pad_id, np.int32),
           "segment_ids": np.zeros((self._seq_len,), np.int32),
           "positions": np.zeros((self._seq_len,), np.int32),
           "given": np.zeros((self._seq_len,), bool)}
    row["tokens"][:n], row["segment_ids"][:n], row["positions"][:n] = tokens, 1, np.arange(n)
    for k, v in extra.items():
      row[k] = np.full((self._seq_len,), -1, np.int32)
      row[k][:n] = v
    return row


# Conditional (source -> target) rows -------------------------------------------------------


def _pair_prefix(tokenizer: Tokenizer, source_ids: np.ndarray, source_len: int) -> np.ndarray:
  """`[bos] source[:source_len] [eos]`: the given part of a pair row."""
  return np.concatenate([[tokenizer.bos_id], source_ids[:source_len],
                         [tokenizer.eos_id]]).astype(np.int32)


def response_padding_ids(tokenizer: Tokenizer, padding: str, length: int) -> np.ndarray:
  """What follows a response's closing eos, `length` tokens: eos again ('eos'), or the
  reserved pads pad_0 .. pad_{K-1} cycling ('rainbow')."""
  if padding == "eos":
    return np.full((length,), tokenizer.eos_id, np.int32)
  if padding == "rainbow":
    pads = np.asarray(tokenizer.reserved_pad_ids, np.int32)
    if not len(pads):
      raise DlmError("rainbow padding needs reserved pad tokens: set "
                     "data.tokenizer.num_reserved_pads >= 1")
    return pads[np.arange(length) % len(pads)]
  raise DlmError(f"data.response_padding must be one of {config_lib.PADDINGS}, got {padding!r}")


def pair_row(tokenizer: Tokenizer, source_ids: np.ndarray, target_ids: np.ndarray, *,
             seq_len: int, source_len: int, padding: str = "eos") -> dict[str, np.ndarray]:
  """One training row of a pair (see the module docstring); `source_len` already resolved;
  `padding`: 'eos' or 'rainbow' after the target's closing eos."""
  prefix = _pair_prefix(tokenizer, source_ids, source_len)
  n = len(prefix)
  target = target_ids[:seq_len - n - 1]  # room for at least one closing eos
  end = n + len(target)
  tokens = np.empty((seq_len,), np.int32)
  tokens[:n] = prefix
  tokens[n:end] = target
  tokens[end] = tokenizer.eos_id
  tokens[end + 1:] = response_padding_ids(tokenizer, padding, seq_len - end - 1)
  given = np.zeros((seq_len,), bool)
  given[:n] = True
  return {"tokens": tokens, "segment_ids": np.ones((seq_len,), np.int32),
          "positions": np.arange(seq_len, dtype=np.int32), "given": given}


def pair_prompt(tokenizer: Tokenizer, source_text: str, seq_len: int,
                source_len: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """The sampling canvas of a pair: `(tokens int32[seq_len], given bool[seq_len])`.

  The same `[bos] source [eos]` prefix as the training row (`source_len` 0 = `seq_len // 2`),
  then `mask` on every position that is not given: a sampler fills those.
  """
  source_len = config_lib.source_budget(seq_len, source_len)
  prefix = _pair_prefix(tokenizer, tokenizer.encode(source_text), source_len)
  tokens = np.full((seq_len,), tokenizer.mask_id, np.int32)
  tokens[:len(prefix)] = prefix
  given = np.zeros((seq_len,), bool)
  given[:len(prefix)] = True
  return tokens, given


class _PairRows(grain.transforms.Map):
  """(source text, target text) -> one row (`pair_row`)."""

  def __init__(self, tokenizer: Tokenizer, seq_len: int, source_len: int, padding: str):
    self._tokenizer = tokenizer
    self._seq_len = seq_len
    self._source_len = source_len
    self._padding = padding

  def map(self, pair: tuple[str, str]) -> dict[str, np.ndarray]:
    source, target = pair
    return pair_row(self._tokenizer, self._tokenizer.encode(source),
                    self._tokenizer.encode(target), seq_len=self._seq_len,
                    source_len=self._source_len, padding=self._padding)


def _fill_batch(batch_size: int, pad_id: int):
  """Pads a short final batch with empty rows so every batch has the same shape."""

  def fn(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    missing = batch_size - batch["tokens"].shape[0]
    if missing == 0:
      return batch
    out = {}
    for k, v in batch.items():
      fill = pad_id if k == "tokens" else 0
      out[k] = np.concatenate([v, np.full((missing,) + v.shape[1:], fill, v.dtype)])
    return out

  return fn


def check_seq_len(seq_len: Any) -> int:
  if not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len <= 0:
    raise DlmError(f"data.seq_len must be a positive integer, got {seq_len!r}")
  return seq_len


def dataset(
    documents: Sequence[str] | stream.Stream,
    tokenizer: Tokenizer,
    *,
    seq_len: int,
    batch_size: int,
    packing: str = "concat",
    add_bos: bool = False,
    shuffle: bool = True,
    seed: int = 0,
    num_epochs: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    prefetch: int = 0,
    pairs: bool = False,
    source_len: int = 0,
    pretokenized: bool = False,
    response_padding: str = "eos",
) -> grain.IterDataset:
  """Batches of this process's share of `documents` (per-process `batch_size` rows each).

  With `num_epochs=None` the stream is endless (training); with a finite count the last batch
  is filled with empty rows (segment id 0) to the full batch size (evaluation). With
  `pairs=True` the documents are `(source, target)` texts, one row each (`packing` and
  `add_bos` do not apply; `source_len` 0 = `seq_len // 2`; `response_padding` 'eos' or
  'rainbow'). With `pretokenized=True` each document is a JSON object of token ids (and
  further int lists), one row each (`_IdRows`).
  """
  check_seq_len(seq_len)
  if pairs:
    source_len = config_lib.source_budget(seq_len, source_len)
    response_padding_ids(tokenizer, response_padding, 0)  # checks the scheme
  if packing not in ("concat", "pad"):
    raise DlmError(f"data.packing must be 'concat' or 'pad', got {packing!r}")
  if batch_size <= 0:
    raise DlmError(f"the per-process batch size must be positive, got {batch_size}")
  if pairs:
    rows = _PairRows(tokenizer, seq_len, source_len, response_padding)
  elif pretokenized:
    rows = _IdRows(seq_len, tokenizer.pad_id)
  else:
    rows = _Tokenize(tokenizer, add_bos)
  if isinstance(documents, stream.Stream):
    ds = documents.dataset(process_index, process_count, num_epochs)
    if shuffle:
      ds = grain.experimental.WindowShuffleIterDataset(ds, window_size=documents.window,
                                                       seed=seed)
    ds = ds.map(rows)
  else:
    ds = grain.MapDataset.source(documents)[process_index::process_count]
    if len(ds) == 0:
      raise DlmError(
          f"empty dataset: process {process_index} of {process_count} gets no documents "
          f"(the split holds {len(documents)})"
      )
    if shuffle:
      ds = ds.shuffle(seed=seed)
    if num_epochs != 1:
      ds = ds.repeat(num_epochs)
    read = grain.ReadOptions(num_threads=READ_THREADS, prefetch_buffer_size=READ_AHEAD)
    ds = ds.map(rows).to_iter_dataset(read)
  if not (pairs or pretokenized):
    if packing == "concat":
      ds = grain.experimental.ConcatThenSplitIterDataset(ds, length_struct={"tokens": seq_len})
      ds = ds.map(_from_packed(tokenizer.pad_id))
    else:
      ds = grain.experimental.FlatMapIterDataset(ds, _PadChunks(seq_len, tokenizer.pad_id))
  finite = num_epochs is not None
  ds = ds.batch(batch_size, drop_remainder=not finite)
  if finite:
    ds = ds.map(_fill_batch(batch_size, tokenizer.pad_id))
  if prefetch:
    ds = grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=prefetch)
  return ds


class BatchIterator:
  """Global batches of one pass over a split (evaluation): each process's rows become one
  `jax.Array` sharded over the batch axes. (Training batches, whose position checkpoints save,
  are dlm/train/batches.py's.)"""

  def __init__(self, ds: grain.IterDataset, global_sharding: jax.sharding.NamedSharding):
    self._it = iter(ds)
    self.sharding = global_sharding

  def __iter__(self):
    return self

  def next_local(self) -> dict[str, np.ndarray]:
    """This process's rows of the next batch, as numpy."""
    return next(self._it)

  def __next__(self) -> dict[str, jax.Array]:
    local = self.next_local()
    return {
        k: jax.make_array_from_process_local_data(self.sharding, v) for k, v in local.items()
    }

  def close(self) -> None:
    """Stops background prefetching (call before exit)."""
    close = getattr(self._it, "close", None)
    if close is not None:
      close()
    self._it = None  # collected now, not during interpreter shutdown


def batch_sharding(mesh: jax.sharding.Mesh, rules) -> jax.sharding.NamedSharding:
  return sharding.named_sharding(mesh, ("batch", "length"), rules)


def split_batch(global_batch_size: int, mesh: jax.sharding.Mesh, rules) -> int:
  """The per-process batch size; checks that the batch axes and processes divide the batch."""
  ways = sharding.batch_axes_size(mesh, rules)
  if global_batch_size <= 0 or global_batch_size % ways:
    raise DlmError(
        f"train.batch_size={global_batch_size} cannot be split over the mesh's batch axes "
        f"({ways} ways)"
    )
  if global_batch_size % jax.process_count():
    raise DlmError(
        f"train.batch_size={global_batch_size} cannot be split over "
        f"{jax.process_count()} processes"
    )
  return global_batch_size // jax.process_count()
