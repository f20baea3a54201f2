"""From one config line to random-access documents.

`data.dataset` selects the source:

* `tfds:NAME` any TFDS dataset by name (`lm1b`, `wiki40b/en`, `c4/en:3.1.0`, and the embedded
  `python_stdlib/docs` / `python_stdlib/code`), prepared as array_record;
* `text:GLOB` local text files (`data.document_per` = `file` | `line`);
* `jsonl:GLOB` local JSON-lines files;
* `parquet:GLOB`, `arrow:GLOB` local Parquet or Arrow files, a document per row;
* `hf:PATH` a `datasets` `save_to_disk` directory, `hf:OWNER/NAME[/CONFIG]` a Hugging Face hub
  dataset (`dlm/data/hf_builder.py`).

Every source ends as a TFDS builder prepared as array_record and read with its data source: no
TensorFlow at run time, and one reading path for all of them. The exception is an `hf:` source
with `data.streaming=True`: read as it arrives, never prepared (`dlm/data/stream.py`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import sys
from typing import Any, Sequence

import filelock
import jax
import tensorflow_datasets as tfds
from jax.experimental import multihost_utils

from dlm.data import hf_builder, local_builder, stream
from dlm.data import stdlib_builder  # noqa: F401  (registers python_stdlib with TFDS)
from dlm.errors import DlmError, one_line


FORMS = "tfds:NAME, text:GLOB, jsonl:GLOB, parquet:GLOB, arrow:GLOB or hf:NAME"


def data_dir(cfg) -> str:
  """Where prepared datasets live: `data.data_dir`, else TFDS's default (TFDS_DATA_DIR)."""
  return os.path.expanduser(cfg.data_dir) if cfg.data_dir else tfds.core.constants.DATA_DIR


def dataset_name(cfg) -> str:
  """A name for `cfg.dataset` that changes when its contents do (the prepared builder's, or a
  streamed dataset's fingerprint)."""
  if cfg.streaming:  # an hf: source (config.validate checks)
    return hf_builder.make_config(cfg.dataset[3:], cfg.validation_fraction, True).name
  return builder(cfg).info.full_name


def builder(cfg) -> tfds.core.DatasetBuilder:
  """The TFDS builder for `cfg.dataset` (a `data` config), or a DlmError naming the problem."""
  spec = cfg.dataset
  scheme, sep, rest = spec.partition(":")
  if not sep or not rest:
    raise DlmError(f"data.dataset={spec!r} is not of the form {FORMS}")
  if scheme == "tfds":
    try:
      return tfds.builder(rest, data_dir=data_dir(cfg), file_format="array_record")
    except tfds.core.registered.DatasetNotFoundError:
      raise DlmError(f"unknown dataset {spec!r}: TFDS has no dataset named {rest!r}") from None
    except ValueError as e:  # unknown config or version of a known dataset
      raise DlmError(f"unknown dataset {spec!r}: {str(e).splitlines()[0]}") from None
    except Exception as e:  # pylint: disable=broad-except  (no network for a hub dataset, ...)
      hub = (" (fetched from the Hugging Face hub: is there network?)"
             if "huggingface" in rest else "")
      raise DlmError(f"cannot open dataset {spec!r}{hub}: {one_line(e)}") from None
  if scheme == "hf":
    b = hf_builder.HfDataset(config=hf_builder.make_config(rest, cfg.validation_fraction),
                             data_dir=data_dir(cfg), file_format="array_record")
  elif scheme in local_builder.KINDS:
    config = local_builder.make_config(scheme, rest, cfg.document_per, cfg.validation_fraction)
    b = local_builder.LocalFiles(config=config, data_dir=data_dir(cfg),
                                 file_format="array_record")
  else:
    raise DlmError(f"unknown dataset source {scheme!r} in data.dataset={spec!r}; "
                   f"expected {FORMS}")
  b.workers = cfg.prepare_workers
  return b


def prepare(cfg) -> tfds.core.DatasetBuilder:
  """Prepares `cfg.dataset`'s array_record files once and returns a builder that reads them.

  Multi-host: process 0 prepares, the others wait for it. Processes that share a data directory
  but not a run (two jobs, parallel test workers) take turns through a file lock next to the
  dataset, so none reads or renames a half-built one."""
  b = builder(cfg)
  if jax.process_count() > 1:  # every process reaches the barrier, prepared or not
    if jax.process_index() == 0 and not b.is_prepared():
      _prepare_locked(b)
    multihost_utils.sync_global_devices(f"dlm-prepare-{b.info.full_name}")
  elif b.is_prepared():
    if b.info.splits:  # made after the preparation: it read the prepared metadata
      return b
  else:
    _prepare_locked(b)
  # A fresh builder reads the prepared files' metadata, whoever wrote them: one made while
  # another process was still preparing (it has finished since) has none.
  return builder(cfg)


def file_lock(path: str):
  """A lock file `path.lock` that serialises processes building `path` (a local path; a bucket
  has no file locks, and multi-host runs build on process 0 only)."""
  if "://" in path:
    return contextlib.nullcontext()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  return filelock.FileLock(path + ".lock")


def _prepare_locked(b: tfds.core.DatasetBuilder) -> None:
  """Prepares `b` under its lock, unless another process did while we waited."""
  with file_lock(str(b.data_dir)):
    if b.is_prepared():
      return
    print(f"dlm: preparing {b.info.full_name} in {b.data_dir} (once)", file=sys.stderr)
    try:
      with _quiet():
        b.download_and_prepare(file_format="array_record")
    except DlmError:
      raise
    except ImportError as e:  # TFDS's lazy imports: TensorFlow, Apache Beam, ...
      module = getattr(e, "name", None) or one_line(e)
      raise DlmError(
          f"preparing {b.info.full_name} needs {module!r}, which dlm does not install: "
          f"pip install 'dlm[prepare]' (TensorFlow and Apache Beam, for preparation only; "
          "training reads the prepared array_record files without them)") from e
    except Exception as e:  # a catalog dataset that needs manual download, network, ...
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise DlmError(f"could not prepare dataset {b.info.full_name}: {first}") from e


@contextlib.contextmanager
def _quiet():
  """TFDS's progress bars and notices stay off the console (dlm says one line instead)."""
  tfds.disable_progress_bar()
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      yield
  finally:
    tfds.enable_progress_bar()


@dataclasses.dataclass
class Documents(Sequence):
  """The texts of one split, random access (a thin view over a TFDS array_record source):
  each item the text of `feature`, or with several features (a pair's source and target) the
  tuple of their texts."""

  source: Any
  feature: str | tuple[str, ...]
  name: str

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return [self[i] for i in range(*index.indices(len(self)))]
    if not -len(self) <= index < len(self):
      raise IndexError(f"document {index} of {len(self)}")
    example = self.source[index % len(self)]
    if isinstance(self.feature, str):
      return example[self.feature].decode("utf-8")
    return tuple(example[f].decode("utf-8") for f in self.feature)

  def __iter__(self):
    return (self[i] for i in range(len(self)))

  def record(self, index: int) -> dict[str, str]:
    """All text features of one document (e.g. `text` and `path`, or `prompt`/`response`)."""
    return {k: v.decode("utf-8") if isinstance(v, bytes) else v
            for k, v in self.source[index].items()}


def _check_features(cfg, features, feature, keys) -> None:
  for name, key in zip((feature,) if isinstance(feature, str) else feature, keys):
    if name not in features:
      raise DlmError(f"dataset {cfg.dataset!r} has no feature {name!r} (features: "
                     f"{sorted(features)}); set data.{key}")


def open_split(cfg, split: str, *, feature: str | tuple[str, ...] | None = None,
               keys: tuple[str, ...] = ("text_feature",)) -> Documents | stream.Stream:
  """Prepares the dataset if needed and returns one split's documents (of `feature`, default
  `data.text_feature`; `keys` name the config keys that chose the features, for errors); with
  `data.streaming`, the split as a `stream.Stream`."""
  feature = feature or cfg.text_feature
  if cfg.streaming:  # an hf: source (config.validate checks)
    hf = hf_builder.make_config(cfg.dataset[3:], cfg.validation_fraction, True)
    _check_features(cfg, hf.fields, feature, keys)
    if split not in hf_builder.splits_of(hf):
      raise DlmError(f"streamed dataset {cfg.dataset!r} has no split {split!r} (splits: "
                     f"{sorted(hf_builder.splits_of(hf))}; a streamed split is read whole)")
    return stream.Stream(hf, split, feature, cfg.shuffle_window)
  b = prepare(cfg)
  _check_features(cfg, b.info.features, feature, keys)
  base = split.split("[")[0]
  if base not in b.info.splits:
    files = getattr(b.builder_config, "files", {})
    if "*" in files and base in local_builder.SPLITS:
      raise DlmError(
          f"dataset {cfg.dataset!r} has no {base!r} documents: the hash split "
          f"(data.validation_fraction={cfg.validation_fraction}) put none there; raise "
          "data.validation_fraction, add documents, or name each split's files with {split} "
          "in the glob")
    raise DlmError(
        f"dataset {cfg.dataset!r} has no split {base!r} (splits: {sorted(b.info.splits)})"
    )
  source = b.as_data_source(split=split)
  if len(source) == 0:
    raise DlmError(f"empty dataset: split {split!r} of {cfg.dataset!r} holds no documents")
  return Documents(source, feature, f"{b.info.full_name}:{split}")
