"""The input pipeline on grain: tokenize, pack or pad, shard by process, batch, global arrays.

Each example is a dict of int32 arrays of shape `(seq_len,)`:

* `tokens`: token ids, `pad` where there is no token;
* `segment_ids`: 1, 2, ... numbering the documents packed into the row, 0 on padding (so
  attention can be kept within a document, and the loss skips padding);
* `positions`: the position of each token within its document's piece in this row.

Packing (`data.packing="concat"`) joins the documents of the shard, each followed by `eos`,
and cuts the stream into rows of `seq_len` (grain's `ConcatThenSplitIterDataset`): no token is
lost or repeated within an epoch, a document may continue in the next row, and only the last
row of a finite epoch is padded. `data.packing="pad"` gives one document per row (sentence-
level data such as LM1B), a document longer than a row continuing over several rows.

Documents are sharded before anything else: process `i` of `n` reads documents `i, i+n, ...`;
training shuffles them with `data.seed`, anew each epoch. The iterator's state (a small dict)
saves and restores the exact position in the stream.
"""

from __future__ import annotations

from typing import Any, Sequence

import grain
import jax
import numpy as np

from dlm import sharding
from dlm.data.tokenizer import Tokenizer
from dlm.errors import DlmError

FEATURES = ("tokens", "segment_ids", "positions")


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
      rows.append({"tokens": row, "segment_ids": segment_ids, "positions": positions})
    return rows


def _from_packed(pad_id: int):
  def fn(example: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    segment_ids = example["tokens_segment_ids"]
    return {
        "tokens": np.where(segment_ids > 0, example["tokens"], pad_id).astype(np.int32),
        "segment_ids": segment_ids.astype(np.int32),
        "positions": example["tokens_positions"].astype(np.int32),
    }

  return fn


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
    documents: Sequence[str],
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
) -> grain.IterDataset:
  """Batches of this process's share of `documents` (per-process `batch_size` rows each).

  With `num_epochs=None` the stream is endless (training); with a finite count the last batch
  is filled with empty rows (segment id 0) to the full batch size (evaluation).
  """
  check_seq_len(seq_len)
  if packing not in ("concat", "pad"):
    raise DlmError(f"data.packing must be 'concat' or 'pad', got {packing!r}")
  if batch_size <= 0:
    raise DlmError(f"the per-process batch size must be positive, got {batch_size}")
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
  ds = ds.map(_Tokenize(tokenizer, add_bos)).to_iter_dataset()
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
  """Global batches: each process's rows become one `jax.Array` sharded over the batch axes.

  `get_state()` / `set_state()` save and restore the position in the stream (a dict that
  Orbax stores next to the train state).
  """

  def __init__(self, ds: grain.IterDataset, global_sharding: jax.sharding.NamedSharding):
    self._ds = ds
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

  def get_state(self) -> dict[str, Any]:
    return self._it.get_state()

  def set_state(self, state: dict[str, Any]) -> None:
    self._it.set_state(state)

  def close(self) -> None:
    """Stops background prefetching (call before exit)."""
    close = getattr(self._it, "close", None)
    if close is not None:
      close()
    self._it = None  # collected now, not during interpreter shutdown

  @property
  def grain_iterator(self):
    return self._it


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
