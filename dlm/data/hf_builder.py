"""Hugging Face `datasets` data as a TFDS dataset (prepared as array_record like any other).

`hf:PATH` names a local directory written by `Dataset.save_to_disk` or
`DatasetDict.save_to_disk` (`datasets.load_from_disk`); `hf:OWNER/NAME[/CONFIG]` (or
`hf:NAME`) a dataset on the Hugging Face hub (`datasets.load_dataset(OWNER/NAME, CONFIG)`,
where the machine can reach it; `datasets` keeps its own copy in its cache first). A
`DatasetDict`'s splits are ours by name (`train`, `validation`, ...); a single `Dataset` is
split into train/validation by a hash of each row's index (`data.validation_fraction`), as
`text:` files are. Every string column becomes a feature (`text`, or a pair's
`prompt`/`response`); other columns are left out.

Rows are read in Arrow record batches from the memory-mapped files, so preparation holds one
batch at a time, however large the dataset. The builder's config name is a fingerprint of the
name and, for a local directory, its files' sizes and modification times, so a dataset saved
anew is prepared anew.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import tensorflow_datasets as tfds

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


def _strings(features) -> tuple[str, ...]:
  return tuple(sorted(name for name, f in features.items()
                      if getattr(f, "dtype", None) in ("string", "large_string")))


def _open(cfg: HfConfig):
  """The `Dataset` or `DatasetDict` behind a config, or a DlmError naming the problem."""
  import datasets  # pylint: disable=g-import-not-at-top

  try:
    if cfg.local:
      return datasets.load_from_disk(cfg.path)
    return datasets.load_dataset(cfg.path, cfg.hub_config)
  except Exception as e:  # pylint: disable=broad-except  (no network, unknown name, ...)
    where = "the local dataset" if cfg.local else "the Hugging Face hub dataset"
    raise DlmError(f"cannot open {where} {cfg.description!r}: {one_line(e)}") from None


def make_config(spec: str, validation_fraction: float) -> HfConfig:
  """The config of `hf:SPEC` (a save_to_disk directory, or NAME[/CONFIG] on the hub)."""
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
                 description=f"hf:{spec}")
  data = _open(cfg)
  if isinstance(data, datasets.DatasetDict):
    splits = tuple(data.keys())
    features = data[splits[0]].features
  else:
    splits, features = (), data.features
  fields = _strings(features)
  if not fields:
    raise DlmError(f"hf:{spec} has no string column (columns: {sorted(features)})")
  digest = hashlib.sha256()
  digest.update(repr((path, hub_config, local, validation_fraction, splits, fields)).encode())
  if local:
    for root, _, files in sorted(os.walk(path)):
      for name in sorted(files):
        st = os.stat(os.path.join(root, name))
        digest.update(f"{os.path.join(root, name)}|{st.st_size}|{st.st_mtime_ns}".encode())
  return HfConfig(name=f"hf_{digest.hexdigest()[:16]}", description=f"hf:{spec}", path=path,
                  hub_config=hub_config, local=local, validation_fraction=validation_fraction,
                  splits=splits, fields=fields)


class HfDataset(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Documents from a Hugging Face dataset."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    features = {f: tfds.features.Text() for f in cfg.fields}
    return self.dataset_info_from_configs(
        description=cfg.description, features=tfds.features.FeaturesDict(features))

  def _split_generators(self, dl_manager):
    del dl_manager
    cfg = self.builder_config
    data = _open(cfg)
    if cfg.splits:
      return {s: self._generate_examples(data[s], f"{s}:") for s in cfg.splits if len(data[s])}
    kept = {split_of(str(i), cfg.validation_fraction) for i in range(len(data))}
    return {s: self._generate_examples(data, "", s) for s in ("train", "validation") if s in kept}

  def _generate_examples(self, dataset, prefix: str, split: str | None = None):
    cfg = self.builder_config
    index = 0
    for batch in dataset.select_columns(list(cfg.fields)).iter(batch_size=BATCH):
      for row in range(len(batch[cfg.fields[0]])):
        i, index = index, index + 1
        if split is not None and split_of(str(i), cfg.validation_fraction) != split:
          continue
        yield f"{prefix}{i}", {f: batch[f][row] or "" for f in cfg.fields}
