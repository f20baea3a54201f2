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
import io
import json
import os

import tensorflow_datasets as tfds

from dlm.data import shards
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


def _record_batches(kind: str, path: str, groups: tuple[int, int] | None = None):
  """A Parquet or Arrow file's record batches (of Parquet row groups [a, b) only, if given);
  a file of another kind is a DlmError."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

  try:
    if kind == "parquet":
      f = pq.ParquetFile(path)
      yield from f.iter_batches(batch_size=BATCH,
                                row_groups=range(*groups) if groups else None)
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
  """The string columns of a table file's schema (a file of no rows has one too)."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

  try:
    if kind == "parquet":
      schema = pq.read_schema(path)
    else:
      try:
        schema = pa.ipc.open_stream(pa.memory_map(path)).schema
      except pa.ArrowInvalid:  # the random-access file format
        schema = pa.ipc.open_file(pa.memory_map(path)).schema
  except (pa.ArrowException, OSError) as e:
    raise DlmError(f"{path}: not a readable {kind} file ({one_line(e)})") from None
  return tuple(sorted(f.name for f in schema
                      if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)))


def _table_rows(kind: str, path: str, fields: tuple[str, ...],
                groups: tuple[int, int] | None = None):
  """(row number, {field: text}) of a Parquet or Arrow file (of Parquet row groups [a, b)
  only, if given), one record batch at a time."""
  row = 0
  if groups and groups[0]:
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

    meta = pq.ParquetFile(path).metadata
    row = sum(meta.row_group(g).num_rows for g in range(groups[0]))
  for batch in _record_batches(kind, path, groups):
    missing = [f for f in fields if f not in batch.schema.names]
    if missing:
      raise DlmError(f"{path}: no column(s) {missing} (the first file's string columns are "
                     f"{list(fields)})")
    columns = [batch.column(f).to_pylist() for f in fields]
    for values in zip(*columns):
      row += 1
      yield row, {f: v or "" for f, v in zip(fields, values)}


def _line_ranges(path: str) -> list[tuple[int, int | None, int]]:
  """Byte ranges of a line-based file, each starting at a line, of about `shards.PIECE_BYTES`,
  with the number of their first line: (start, end, first line). One pass over the file; one
  range, (0, None, 1), for a smaller file."""
  if os.path.getsize(path) <= shards.PIECE_BYTES:
    return [(0, None, 1)]
  ranges, start, line = [], 0, 1
  with open(path, "rb") as f:
    while True:
      chunk = f.read(shards.PIECE_BYTES) + f.readline()  # ends after a \n, or at the end
      if not chunk:
        break
      ranges.append((start, start + len(chunk), line))
      start += len(chunk)
      line += chunk.count(b"\n") + chunk.count(b"\r") - chunk.count(b"\r\n")
  ranges[-1] = ranges[-1][:1] + (None,) + ranges[-1][2:]
  return ranges


def _range_lines(path: str, start: int, end: int | None, first: int = 1):
  """(line number, line) of the lines in bytes [start, end) of a UTF-8 file, the first
  numbered `first`, as `_lines` gives them (the whole file when the range is (0, None))."""
  if (start, end) == (0, None):
    yield from _lines(path)
    return
  with open(path, "rb") as f:
    f.seek(start)
    raw = f.read() if end is None else f.read(end - start)
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError:
    raise _not_utf8(path) from None
  yield from enumerate(io.StringIO(text, newline=None), first)


def _jsonl_records(path: str, start: int = 0, end: int | None = None, first: int = 1):
  for lineno, line in _range_lines(path, start, end, first):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise DlmError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(record, dict):
      raise DlmError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
    yield lineno, record


def _row_group_ranges(path: str) -> list[tuple[int, int]]:
  """Ranges of a Parquet file's row groups of about `shards.PIECE_BYTES` each."""
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

  try:
    meta = pq.ParquetFile(path).metadata
  except Exception:  # pylint: disable=broad-except  (reading it names the problem)
    return [(0, 1)]
  if not meta.num_row_groups:
    return []
  ranges, start, size = [], 0, 0
  for g in range(meta.num_row_groups):
    size += meta.row_group(g).total_byte_size
    if size >= shards.PIECE_BYTES:
      ranges.append((start, g + 1))
      start, size = g + 1, 0
  if start < meta.num_row_groups:
    ranges.append((start, meta.num_row_groups))
  return ranges


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
      raise DlmError(f"{kind}:{pattern}: the first file ({first_file}) has no string column")
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


class LocalFiles(shards.ShardedBuilder, skip_registration=True):
  """Documents from local text, JSONL, Parquet or Arrow files, prepared in pieces (a file, a
  range of a long line-based file, Parquet row groups) by parallel workers (`shards`)."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.1.0": "hash split keys relative to the glob's fixed directory"}

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    features = {f: tfds.features.Text() for f in cfg.fields}
    features["path"] = tfds.features.Text()
    return self.dataset_info_from_configs(
        description=cfg.description, features=tfds.features.FeaturesDict(features)
    )

  def _source_bytes(self) -> int:
    return sum(os.path.getsize(p) for paths in self.builder_config.files.values() for p in paths)

  def _pieces(self) -> list[tuple]:
    """(split or '*', path, range): a byte range of a line-based file, row groups of a
    Parquet file, or None (the whole file)."""
    cfg = self.builder_config
    by_lines = cfg.kind == "jsonl" or (cfg.kind == "text" and cfg.document_per == "line")
    pieces = []
    for split, paths in cfg.files.items():
      for path in paths:
        if by_lines:
          pieces += [(split, path, r) for r in _line_ranges(path)]
        elif cfg.kind == "parquet":
          pieces += [(split, path, r) for r in _row_group_ranges(path)]
        else:
          pieces.append((split, path, None))
    return pieces

  def _piece_bytes(self, piece) -> int:
    _, path, part = piece
    if not part:
      return os.path.getsize(path)
    if self.builder_config.kind == "parquet":  # row groups [a, b): their share of the file
      import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

      groups = max(1, pq.ParquetFile(path).metadata.num_row_groups)
      return os.path.getsize(path) * (part[1] - part[0]) // groups
    start, end, _ = part
    return (os.path.getsize(path) if end is None else end) - start

  def _piece_examples(self, piece):
    split, path, part = piece
    cfg = self.builder_config
    root = _root(cfg.pattern)
    for key, features in self._documents(path, part):
      if split == "*":
        yield split_of(_split_key(key, root), cfg.validation_fraction), {**features, "path": key}
      else:
        yield split, {**features, "path": key}

  def _documents(self, path: str, part):
    cfg = self.builder_config
    if cfg.kind == "jsonl":
      for lineno, record in _jsonl_records(path, *part):
        missing = [f for f in cfg.fields if not isinstance(record.get(f), str)]
        if missing:
          raise DlmError(f"{path}:{lineno}: record lacks string field(s) {missing}")
        yield f"{path}:{lineno}", {f: record[f] for f in cfg.fields}
    elif cfg.kind in TABLES:
      for row, features in _table_rows(cfg.kind, path, cfg.fields, part):
        yield f"{path}:{row}", features
    elif cfg.document_per == "line":
      for lineno, line in _range_lines(path, *part):
        if line.strip():
          yield f"{path}:{lineno}", {"text": line.rstrip("\n")}
    else:
      text = _read(path)
      if text.strip():  # an empty file is no document
        yield path, {"text": text}

  def _check_prepared(self, counts: dict[str, int]) -> None:
    """No document at all is an error; so is an empty split named by `{split}`. (An empty
    split of a hash split is left out: `sources.open_split` then says so.)"""
    cfg = self.builder_config
    if not sum(counts.values()):
      raise DlmError(f"empty dataset: the files matching {cfg.description} hold no text")
    if "*" not in cfg.files:
      empty = [s for s in SPLITS if not counts.get(s)]
      if empty:
        raise DlmError(f"empty dataset: the {empty[0]!r} files matching {cfg.description} "
                       "hold no text")
