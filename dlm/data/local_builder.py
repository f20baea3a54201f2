"""User text, JSONL, Parquet and Arrow files as a TFDS dataset (prepared as array_record like
any other).

`text:GLOB` reads one document per file (or per non-empty line, `data.document_per="line"`);
(empty files and blank lines are no documents; a file that is not UTF-8 is an error naming it);
`jsonl:GLOB` reads one document per line, each a JSON object whose string fields become
features (`text`, or `prompt`/`response` pairs for instruction data); `parquet:GLOB` and
`arrow:GLOB` (Arrow IPC stream or file format, as `datasets` writes) read one document per
row, every string column of the first file a feature, in record batches (with `pyarrow`), so
memory holds one batch, not a file. A `{split}` in the glob
names the split's files (`text:/data/{split}/*.txt`); otherwise documents are split into
train/validation by a hash of their key (file path, or path:line), the path taken relative to
the glob's fixed directory so that a corpus splits the same wherever it is stored.

The builder's config name is a fingerprint of the glob, the options and the files' sizes and
modification times, so edited or added files are prepared anew.
"""

from __future__ import annotations

import dataclasses
import glob as globlib
import hashlib
import json
import os

import tensorflow_datasets as tfds

from dlm.data.stdlib_builder import split_of
from dlm.errors import DlmError, one_line

SPLITS = ("train", "validation")
KINDS = ("text", "jsonl", "parquet", "arrow")
TABLES = ("parquet", "arrow")
BATCH = 1024  # rows per record batch read from a Parquet or Arrow file


@dataclasses.dataclass(eq=False)
class LocalFilesConfig(tfds.core.BuilderConfig):
  kind: str = "text"  # "text" | "jsonl"
  pattern: str = ""
  document_per: str = "file"  # text only: "file" | "line"
  validation_fraction: float = 0.05
  files: dict = dataclasses.field(default_factory=dict)  # split ('*' = all) -> sorted paths
  fields: tuple = ("text",)


def _expand(pattern: str) -> dict[str, list[str]]:
  if "{split}" in pattern:
    return {s: sorted(globlib.glob(pattern.format(split=s), recursive=True)) for s in SPLITS}
  return {"*": sorted(globlib.glob(pattern, recursive=True))}


def _root(pattern: str) -> str:
  """The directory of a glob before its first wildcard component ('' for a relative glob that
  starts with one); split keys are taken relative to it."""
  parts = pattern.split(os.sep)
  fixed = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")),
               len(parts) - 1)
  return os.sep.join(parts[:fixed])


def _split_key(key: str, root: str) -> str:
  return os.path.relpath(key, root) if root else key


def _not_utf8(path: str) -> DlmError:
  """Where a file stops being UTF-8: the line and byte of its first invalid sequence."""
  with open(path, "rb") as f:
    offset = 0
    for lineno, raw in enumerate(f, 1):
      try:
        raw.decode("utf-8")
      except UnicodeDecodeError as e:
        return DlmError(f"{path}: not valid UTF-8 (line {lineno}, byte {offset + e.start}: "
                        f"{e.reason}); convert the file to UTF-8 or leave it out of the glob")
      offset += len(raw)
  return DlmError(f"{path}: not valid UTF-8")


def _lines(path: str):
  """(line number, line) of a UTF-8 text file; invalid UTF-8 is a DlmError naming the file."""
  try:
    with open(path, encoding="utf-8") as f:
      yield from enumerate(f, 1)
  except UnicodeDecodeError:
    raise _not_utf8(path) from None


def _read(path: str) -> str:
  try:
    with open(path, encoding="utf-8") as f:
      return f.read()
  except UnicodeDecodeError:
    raise _not_utf8(path) from None


def _jsonl_records(path: str):
  for lineno, line in _lines(path):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise DlmError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(record, dict):
      raise DlmError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
    yield lineno, record


def _record_batches(kind: str, path: str):
  """A Parquet or Arrow file's record batches; a file of another kind is a DlmError."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

  try:
    if kind == "parquet":
      yield from pq.ParquetFile(path).iter_batches(batch_size=BATCH)
      return
    try:
      reader = pa.ipc.open_stream(pa.memory_map(path))
    except pa.ArrowInvalid:  # the random-access file format
      reader = pa.ipc.open_file(pa.memory_map(path))
      reader = (reader.get_batch(i) for i in range(reader.num_record_batches))
    yield from reader
  except (pa.ArrowException, OSError) as e:
    raise DlmError(f"{path}: not a readable {kind} file ({one_line(e)})") from None


def _schema_strings(kind: str, path: str) -> tuple[str, ...]:
  import pyarrow as pa  # pylint: disable=g-import-not-at-top

  batch = next(iter(_record_batches(kind, path)), None)
  if batch is None:
    return ()
  return tuple(sorted(f.name for f in batch.schema
                      if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)))


def _table_rows(kind: str, path: str, fields: tuple[str, ...]):
  """(row number, {field: text}) of a Parquet or Arrow file, one record batch at a time."""
  row = 0
  for batch in _record_batches(kind, path):
    missing = [f for f in fields if f not in batch.schema.names]
    if missing:
      raise DlmError(f"{path}: no column(s) {missing} (the first file's string columns are "
                     f"{list(fields)})")
    columns = [batch.column(f).to_pylist() for f in fields]
    for values in zip(*columns):
      row += 1
      yield row, {f: v or "" for f, v in zip(fields, values)}


def _row_count(kind: str, path: str, fields: tuple[str, ...]) -> int:
  """A table file's rows: from a Parquet file's metadata, else by reading its batches."""
  if kind == "parquet":
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

    try:
      return pq.ParquetFile(path).metadata.num_rows
    except Exception:  # pylint: disable=broad-except  (the read below names the problem)
      pass
  return sum(1 for _ in _table_rows(kind, path, fields))


def make_config(kind: str, pattern: str, document_per: str, validation_fraction: float):
  """Builds the config for a glob, checking that it matches files; raises DlmError if not."""
  if kind not in KINDS:
    raise DlmError(f"unknown local file kind {kind!r}; expected one of {KINDS}")
  if document_per not in ("file", "line"):
    raise DlmError(f"data.document_per must be 'file' or 'line', got {document_per!r}")
  files = _expand(pattern)
  files = {s: [p for p in paths if os.path.isfile(p)] for s, paths in files.items()}
  if not any(files.values()):
    raise DlmError(f"no files match {kind}:{pattern}")
  for split, paths in files.items():
    if split != "*" and not paths:
      raise DlmError(f"no files match {kind}:{pattern} for split {split!r}")
  fields: tuple = ("text",)
  if kind == "jsonl":
    first = next(
        (r for paths in files.values() for p in paths for _, r in _jsonl_records(p)), None
    )
    if first is None:
      raise DlmError(f"empty dataset: the files matching jsonl:{pattern} hold no records")
    fields = tuple(sorted(k for k, v in first.items() if isinstance(v, str)))
    if not fields:
      raise DlmError(f"jsonl:{pattern}: the first record has no string field")
  if kind in TABLES:
    first_file = next(p for paths in files.values() for p in paths)
    fields = _schema_strings(kind, first_file)
    if not fields:
      raise DlmError(f"{kind}:{pattern}: the first file ({first_file}) has no string column "
                     "or no rows")
  digest = hashlib.sha256()
  digest.update(repr((kind, pattern, document_per, validation_fraction, fields)).encode())
  for paths in files.values():
    for p in paths:
      st = os.stat(p)
      digest.update(f"{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}".encode())
  return LocalFilesConfig(
      name=f"{kind}_{digest.hexdigest()[:16]}",
      description=f"{kind}:{pattern}",
      kind=kind,
      pattern=pattern,
      document_per=document_per,
      validation_fraction=validation_fraction,
      files=files,
      fields=fields,
  )


class LocalFiles(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Documents from local text or JSONL files."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.1.0": "hash split keys relative to the glob's fixed directory"}

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    features = {f: tfds.features.Text() for f in cfg.fields}
    features["path"] = tfds.features.Text()
    return self.dataset_info_from_configs(
        description=cfg.description, features=tfds.features.FeaturesDict(features)
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {s: self._generate_examples(s) for s in self._nonempty_splits()}

  def _keys(self, paths):
    cfg = self.builder_config
    for path in paths:
      if cfg.kind in TABLES:
        for row in range(1, _row_count(cfg.kind, path, cfg.fields) + 1):
          yield f"{path}:{row}"
        continue
      if cfg.kind == "text" and cfg.document_per == "file":
        if _read(path).strip():
          yield path
        continue
      for lineno, line in _lines(path):
        if line.strip():
          yield f"{path}:{lineno}"

  def _nonempty_splits(self) -> list[str]:
    """TFDS cannot write an empty split: a hash split of few documents may leave one empty
    (`sources.open_split` then says so). No document at all is an error here."""
    cfg = self.builder_config
    found = {split: any(True for _ in self._keys(paths)) for split, paths in cfg.files.items()}
    if not any(found.values()):
      raise DlmError(f"empty dataset: the files matching {cfg.description} hold no text")
    if "*" not in cfg.files:
      empty = [s for s, any_doc in found.items() if not any_doc]
      if empty:
        raise DlmError(f"empty dataset: the {empty[0]!r} files matching {cfg.description} "
                       "hold no text")
      return list(SPLITS)
    root = _root(cfg.pattern)
    splits = {split_of(_split_key(k, root), cfg.validation_fraction)
              for k in self._keys(cfg.files["*"])}
    return [s for s in SPLITS if s in splits]

  def _documents(self, paths):
    cfg = self.builder_config
    for path in paths:
      if cfg.kind == "jsonl":
        for lineno, record in _jsonl_records(path):
          missing = [f for f in cfg.fields if not isinstance(record.get(f), str)]
          if missing:
            raise DlmError(f"{path}:{lineno}: record lacks string field(s) {missing}")
          yield f"{path}:{lineno}", {**{f: record[f] for f in cfg.fields}}
      elif cfg.kind in TABLES:
        for row, features in _table_rows(cfg.kind, path, cfg.fields):
          yield f"{path}:{row}", features
      elif cfg.document_per == "line":
        for lineno, line in _lines(path):
          if line.strip():
            yield f"{path}:{lineno}", {"text": line.rstrip("\n")}
      else:
        text = _read(path)
        if text.strip():  # an empty file is no document
          yield path, {"text": text}

  def _generate_examples(self, split: str):
    cfg = self.builder_config
    if "*" in cfg.files:
      root = _root(cfg.pattern)
      for key, features in self._documents(cfg.files["*"]):
        if split_of(_split_key(key, root), cfg.validation_fraction) == split:
          yield key, {**features, "path": key}
    else:
      for key, features in self._documents(cfg.files[split]):
        yield key, {**features, "path": key}
