"""Streamed Hugging Face datasets (`data.streaming=True`): documents read as they arrive, never
prepared, with the same per-process sharding and exact resume as prepared sources.

A `Stream` is one split. Reader `i` of `n` (a process's shard, or a training stream of
dlm/train/batches.py) reads `datasets.distributed.split_dataset_by_node(split, i, n)`: whole
shards (files, or contiguous pieces of a local Arrow dataset) when their number divides
evenly, else every n-th row. Its position is the `datasets.IterableDataset.state_dict()` of
the current epoch with the epoch number (JSON, as grain checkpoints store it), restored
exactly: `datasets` skips to the shard and row it records.

Departure from prepared sources: a prepared split is shuffled whole (grain's index shuffle);
a streamed one can only be shuffled as it flows. `pipeline.dataset` shuffles it within
windows of `data.shuffle_window` documents (grain's WindowShuffleIterDataset, which restores
exactly by re-reading the current window), each epoch with new windows; shards are read in
their stored order. `datasets`' own buffer shuffle is not used: it loses its buffer on
resume (datasets docs, "Checkpoint and resume differences").
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import grain

from dlm.data import hf_builder
from dlm.errors import DlmError


class Stream:
  """The documents of one split of a streamed `hf:` dataset: each item the text of `feature`,
  or with several features (a pair's source and target) the tuple of their texts. Not random
  access: slicing from the start reads the split up to the slice's end."""

  def __init__(self, cfg: hf_builder.HfConfig, split: str, feature: str | tuple[str, ...],
               window: int):
    self.cfg, self.split, self.feature, self.window = cfg, split, feature, window
    self.name = f"{cfg.description}:{split} (streamed)"
    self._data = hf_builder.open_data(cfg)

  def source(self, index: int = 0, count: int = 1):
    """Reader `index` of `count`: a `datasets.IterableDataset` of rows (dicts of texts)."""
    from datasets.distributed import split_dataset_by_node  # pylint: disable=g-import-not-at-top

    split = hf_builder.stream(self.cfg, self._data, self.split, count)
    return split_dataset_by_node(split, rank=index, world_size=count) if count > 1 else split

  def item(self, row: dict[str, str]):
    if isinstance(self.feature, str):
      return row[self.feature] or ""
    return tuple(row[f] or "" for f in self.feature)

  def __getitem__(self, index):
    if isinstance(index, slice) and index.step in (None, 1) and (index.start or 0) >= 0 \
        and (index.stop or 0) >= 0:  # [:] reads the whole split
      items = (self.item(row) for row in self.source())
      return list(itertools.islice(items, index.start or 0, index.stop))
    if isinstance(index, int) and index >= 0:
      got = self[index:index + 1]
      if got:
        return got[0]
      raise IndexError(f"document {index}: {self.name} holds fewer")
    raise TypeError(f"a streamed split reads from its start: [start:stop] or [i], got {index!r}")

  def record(self, index: int) -> dict[str, str]:
    """All text features of one document."""
    row = next(itertools.islice(self.source(), index, None), None)
    if row is None:
      raise IndexError(f"document {index}: {self.name} holds fewer")
    return dict(row)

  def dataset(self, index: int, count: int, num_epochs: int | None) -> grain.IterDataset:
    """Reader `index` of `count`'s items, `num_epochs` passes (None = endless), as a grain
    dataset whose iterator state restores exactly."""
    return _StreamDataset(self, index, count, num_epochs)


class _StreamDataset(grain.IterDataset):

  def __init__(self, stream: Stream, index: int, count: int, num_epochs: int | None):
    super().__init__()
    self.stream, self.index, self.count, self.num_epochs = stream, index, count, num_epochs

  def __iter__(self) -> grain.DatasetIterator:
    return _StreamIterator(self)

  def __str__(self) -> str:
    return f"Stream({self.stream.name}, {self.index} of {self.count})"


class _StreamIterator(grain.DatasetIterator):
  """Items of one reader, epoch after epoch; its state is {epoch, read, position}, where
  `position` is `datasets`' state of the epoch (None before its first row)."""

  def __init__(self, parent: _StreamDataset):
    super().__init__()
    self._dataset = parent
    self._start(epoch=0, read=0, position=None)

  def _start(self, epoch: int, read: int, position: Any) -> None:
    p = self._dataset
    self._epoch, self._read = epoch, read
    self._source = p.stream.source(p.index, p.count)
    if position is not None:
      self._source.load_state_dict(copy.deepcopy(position))
    self._rows = iter(self._source)

  def __next__(self):
    p = self._dataset
    while True:
      try:
        row = next(self._rows)
      except StopIteration:
        if self._read == 0:  # an empty reader would loop over empty epochs for ever
          raise DlmError(f"empty dataset: reader {p.index} of {p.count} of {p.stream.name} "
                         "gets no documents") from None
        if p.num_epochs is not None and self._epoch + 1 >= p.num_epochs:
          raise
        self._start(self._epoch + 1, 0, None)
        continue
      self._read += 1
      return p.stream.item(row)

  def get_state(self) -> dict[str, Any]:
    position = copy.deepcopy(self._source.state_dict()) if self._read else None
    return {"epoch": self._epoch, "read": self._read, "position": position}

  def set_state(self, state: dict[str, Any]) -> None:
    self._start(state["epoch"], state["read"], state["position"])
