"""Hugging Face `datasets` data as a TFDS dataset (prepared as array_record like any other).

`hf:PATH` names a local directory: one written by `Dataset.save_to_disk` or
`DatasetDict.save_to_disk` (`datasets.load_from_disk`), or any other directory of data files
`datasets.load_dataset` reads (a hub repository's layout: Parquet, JSON, CSV files, splits
named by their file names, e.g. `Dataset.to_parquet` exports). `hf:OWNER/NAME[/CONFIG]` (or
`hf:NAME`) is a dataset on the Hugging Face hub (`datasets.load_dataset(OWNER/NAME, CONFIG)`,
where the machine can reach it; `datasets` keeps its own copy in its cache first). A
dataset's splits are ours by name (`train`, `validation`, ...); a single `Dataset` is split
into train/validation by a hash of each row's text (`data.validation_fraction`), so identical
documents share a split. Every string column becomes a feature (`text`, or a pair's
`prompt`/`response`); other columns are left out.

Prepared (the default), rows are read in Arrow record batches from the memory-mapped files,
so preparation holds one batch at a time, however large the dataset. The builder's config
name is a fingerprint of the name and, for a local directory, its files' sizes and
modification times, so a dataset saved anew is prepared anew. Streamed (`data.streaming`),
`stream` gives a split as a `datasets.IterableDataset` instead (dlm/data/stream.py reads it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import tensorflow_datasets as tfds

from dlm.data import shards
from dlm.data.stdlib_builder import split_of
from dlm.errors import DlmError, one_line

BATCH = 1024  # rows per Arrow record batch read


@dataclasses.dataclass(eq=False)
class HfConfig(tfds.core.BuilderConfig):
  path: str = ""  # a save_to_disk directory or a hub name
  hub_config: str | None = None
  local: bool = True
  validation_fraction: float = 0.05
  splits: tuple = ()  # the DatasetDict's split names; () = one Dataset, hash split
  fields: tuple = ("text",)
  streaming: bool = False


def _saved(path: str) -> bool:
  """Whether a directory was written by `save_to_disk` (else: data files for load_dataset)."""
  return any(os.path.exists(os.path.join(path, f))
             for f in ("dataset_dict.json", "state.json"))


def split_key(row: dict, fields: tuple[str, ...]) -> str:
  """A row's hash-split key: its text fields (so identical documents share a split)."""
  return "\x1f".join(row[f] or "" for f in fields)


def _strings(features) -> tuple[str, ...]:
  return tuple(sorted(name for name, f in features.items()
                      if getattr(f, "dtype", None) in ("string", "large_string")))


def open_data(cfg: HfConfig):
  """The `Dataset` or `DatasetDict` behind a config, or a DlmError naming the problem."""
  import datasets  # pylint: disable=g-import-not-at-top

  try:
    if cfg.local and _saved(cfg.path):
      return datasets.load_from_disk(cfg.path)
    return datasets.load_dataset(cfg.path, cfg.hub_config, streaming=cfg.streaming)
  except Exception as e:  # pylint: disable=broad-except  (no network, unknown name, ...)
    where = "the local dataset" if cfg.local else "the Hugging Face hub dataset"
    raise DlmError(f"cannot open {where} {cfg.description!r}: {one_line(e)}") from None


def make_config(spec: str, validation_fraction: float, streaming: bool = False) -> HfConfig:
  """The config of `hf:SPEC` (a local directory, or NAME[/CONFIG] on the hub); `streaming`
  opens a hub dataset without downloading it."""
  import datasets  # pylint: disable=g-import-not-at-top

  local = os.path.isdir(os.path.expanduser(spec))
  path, hub_config = os.path.expanduser(spec), None
  if not local:
    if spec.startswith(("/", ".", "~")):
      raise DlmError(f"hf:{spec}: no such directory (a Dataset.save_to_disk directory, or a "
                     "hub name OWNER/NAME[/CONFIG])")
    if spec.count("/") == 2:
      path, hub_config = spec.rsplit("/", 1)
  cfg = HfConfig(name="probe", path=path, hub_config=hub_config, local=local,
                 description=f"hf:{spec}", streaming=streaming)
  data = open_data(cfg)
  if isinstance(data, (datasets.DatasetDict, datasets.IterableDatasetDict)):
    splits = tuple(data.keys())
    if not splits:
      raise DlmError(f"hf:{spec} holds no split")
    first = data[splits[0]]
  else:
    splits, first = (), data
  features = first.features
  if features is None:  # a streamed dataset whose files do not say: its first row does
    row = next(iter(first), {})
    features = {k: datasets.Value("string") for k, v in row.items() if isinstance(v, str)}
  fields = _strings(features)
  if not fields:
    raise DlmError(f"hf:{spec} has no string column (columns: {sorted(features)})")
  digest = hashlib.sha256()
  digest.update(repr((path, hub_config, local, validation_fraction, splits, fields,
                      streaming)).encode())
  if local:
    for root, _, files in sorted(os.walk(path)):
      for name in sorted(files):
        st = os.stat(os.path.join(root, name))
        digest.update(f"{os.path.join(root, name)}|{st.st_size}|{st.st_mtime_ns}".encode())
  return HfConfig(name=f"hf_{digest.hexdigest()[:16]}", description=f"hf:{spec}", path=path,
                  hub_config=hub_config, local=local, validation_fraction=validation_fraction,
                  splits=splits, fields=fields, streaming=streaming)


def splits_of(cfg: HfConfig) -> tuple[str, ...]:
  """Our split names: the dataset's, or train/validation of a hash split."""
  return cfg.splits or ("train", "validation")


def stream(cfg: HfConfig, data, split: str, shards: int):
  """One split as a `datasets.IterableDataset` of the text fields, in stored order: a hub
  dataset in `datasets`' streaming mode (its files are its shards), a local one from its files
  in `shards` contiguous pieces (so `split_dataset_by_node` over `shards` nodes gives each one
  piece). `data` is `open_data(cfg)`. A hash split keeps its split's rows."""
  part = data[split] if cfg.splits else data
  if hasattr(part, "to_iterable_dataset"):  # a local Arrow dataset
    part = part.to_iterable_dataset(num_shards=max(1, min(shards, len(part))))
  part = part.select_columns(list(cfg.fields))
  if not cfg.splits:
    fields, fraction = cfg.fields, cfg.validation_fraction
    part = part.filter(lambda row: split_of(split_key(row, fields), fraction) == split)
  return part


_OPENED: dict = {}  # a worker's open datasets, by config name (it writes several pieces)


class HfDataset(shards.ShardedBuilder, skip_registration=True):
  """Documents from a Hugging Face dataset, prepared in row ranges by parallel workers
  (`shards`)."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.1.0": "hash split by each row's text, not its index"}

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    features = {f: tfds.features.Text() for f in cfg.fields}
    return self.dataset_info_from_configs(
        description=cfg.description, features=tfds.features.FeaturesDict(features))

  def _data(self):
    cfg = self.builder_config
    if cfg.name not in _OPENED:
      _OPENED.clear()
      _OPENED[cfg.name] = open_data(cfg)
    return _OPENED[cfg.name]

  def _parts(self):
    """(split name or None for one Dataset, its Dataset)."""
    data = self._data()
    return [(s, data[s]) for s in self.builder_config.splits] or [(None, data)]

  def _source_bytes(self) -> int:
    return sum(part.data.nbytes for _, part in self._parts())

  def _pieces(self) -> list[tuple]:
    """(split or None, first row, end row): ranges of about `shards.PIECE_BYTES`."""
    pieces = []
    for split, part in self._parts():
      rows = len(part)
      per = max(1, rows * shards.PIECE_BYTES // max(1, part.data.nbytes))
      pieces += [(split, a, min(a + per, rows)) for a in range(0, rows, per)]
    return pieces

  def _piece_bytes(self, piece) -> int:
    return piece[2] - piece[1]  # rows

  def _piece_examples(self, piece):
    split, start, end = piece
    cfg = self.builder_config
    part = self._data()[split] if split else self._data()
    rows = part.select(range(start, end)).select_columns(list(cfg.fields))
    for batch in rows.iter(batch_size=BATCH):
      for r in range(len(batch[cfg.fields[0]])):
        row = {f: batch[f][r] or "" for f in cfg.fields}
        yield split or split_of(split_key(row, cfg.fields), cfg.validation_fraction), row

  def _check_prepared(self, counts: dict[str, int]) -> None:
    if not sum(counts.values()):
      raise DlmError(f"empty dataset: {self.builder_config.description} holds no rows")
