"""Preparation in parallel: a TFDS builder whose source is cut into pieces, each piece written
as its own array_record shard by one of several worker processes.

TFDS's generic path (`GeneratorBasedBuilder._generate_splits`) runs one generator per split in
one process and shuffles the examples on disk by key. A `ShardedBuilder` instead lists its
source's *pieces* (files, byte ranges of a long file at line boundaries, Parquet row groups,
row ranges of an Arrow dataset; `_pieces`), and each worker writes every example of a piece to
the piece's file of its split (`_piece_examples` yields `(split, features)`). The parent
then names the files as the split's shards and records their lengths, as TFDS's own
Hugging Face builder does (`tensorflow_datasets/core/dataset_builders/
huggingface_dataset_builder.py`). The order on disk is the source's: training shuffles by
index anyway (`pipeline.dataset`).

Workers are fresh processes (`python -m dlm.data.shards`, the pieces pickled on stdin, the
written files' lengths on stdout): not forked, since the parent may run JAX's threads, which
forking would copy mid-lock; not `multiprocessing`'s "spawn", which re-imports the user's main
script and, without an `if __name__ == "__main__"` guard, runs it again in every worker. Each
is given the builder's class and config and its share of the pieces (largest first, each to the
least loaded), and holds one document (or one record batch, or one range of at most
`PIECE_BYTES`) at a time.
`workers` 0 means automatic: one process for a source under `PARALLEL_FROM_BYTES` (starting
workers costs seconds), else one per CPU, at most one per piece.
"""

from __future__ import annotations

import abc
import os
import pickle
import subprocess
import sys
import tempfile
from typing import Any, Iterator

import tensorflow_datasets as tfds
from tensorflow_datasets.core import example_serializer
from tensorflow_datasets.core import splits as splits_lib

from dlm.errors import DlmError

PIECE_BYTES = 32 << 20  # a long line-based file is cut into ranges of about this size
PARALLEL_FROM_BYTES = 64 << 20


def cpus() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count() or 1


class ShardedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A builder prepared piece by piece (see the module docstring); subclasses give
  `_pieces()`, `_piece_examples(piece)`, `_source_bytes()` and may check the result in
  `_check_prepared(counts)`."""

  workers: int = 0  # 0 = automatic; set by `sources.builder` from data.prepare_workers

  @abc.abstractmethod
  def _pieces(self) -> list[Any]:
    """The source's pieces: small picklable descriptions, each one worker's unit of work."""

  @abc.abstractmethod
  def _piece_examples(self, piece) -> Iterator[tuple[str, dict]]:
    """(split, features) of every example of one piece."""

  @abc.abstractmethod
  def _source_bytes(self) -> int:
    """About how large the source is (chooses one process or several)."""

  def _piece_bytes(self, piece) -> int:
    """About how much a piece holds (to share pieces evenly); equal by default."""
    del piece
    return 1

  def _check_prepared(self, counts: dict[str, int]) -> None:
    """Raises if the examples written per split are not acceptable (called before naming)."""

  def _split_generators(self, dl_manager):
    """TFDS's generic one-process path over the same pieces (`_generate_splits` above replaces
    it in preparation; kept exact, and tested equal, for TFDS tools that call it)."""
    del dl_manager
    splits = {split for piece in self._pieces() for split, _ in self._piece_examples(piece)}
    return {split: self._generate_examples(split=split) for split in sorted(splits)}

  def _generate_examples(self, split: str):
    for i, piece in enumerate(self._pieces()):
      for j, (s, example) in enumerate(self._piece_examples(piece)):
        if s == split:
          yield f"{i}:{j}", example

  def worker_count(self, pieces: int) -> int:
    if self.workers:
      return max(1, min(self.workers, pieces))
    if self._source_bytes() < PARALLEL_FROM_BYTES:
      return 1
    return max(1, min(cpus(), pieces))

  def _generate_splits(self, dl_manager, download_config) -> list[splits_lib.SplitInfo]:
    del dl_manager, download_config
    pieces = self._pieces()
    out = os.fspath(self.data_path)
    root = os.fspath(self._data_dir_root)
    jobs = [(type(self), self.builder_config, root, i, piece, out)
            for i, piece in enumerate(pieces)]
    n = self.worker_count(len(pieces))
    if n == 1:
      _BUILDERS.clear()
      _BUILDERS[type(self), self.builder_config.name, root] = self
      written = [_write_piece(job) for job in jobs]
    else:
      written = _in_workers(jobs, [self._piece_bytes(p) for p in pieces], n)
    counts: dict[str, int] = {}
    for files in written:
      for split, (_, examples, _) in files.items():
        counts[split] = counts.get(split, 0) + examples
    self._check_prepared(counts)  # on error TFDS removes the unfinished directory
    infos = []
    for split in sorted(counts):
      shards = [files[split] for files in written if split in files]
      template = self._get_filename_template(split)
      for k, (path, _, _) in enumerate(shards):
        os.replace(path, os.fspath(template.sharded_filepath(shard_index=k,
                                                             num_shards=len(shards))))
      infos.append(splits_lib.SplitInfo(
          name=split, shard_lengths=[e for _, e, _ in shards],
          num_bytes=sum(b for _, _, b in shards), filename_template=template))
    return infos


def _in_workers(jobs: list, sizes: list[int], n: int) -> list:
  """`_write_piece` of every job in `n` worker processes; results in job order."""
  loads, shares = [0] * n, [[] for _ in range(n)]
  for i in sorted(range(len(jobs)), key=lambda i: -sizes[i]):
    w = loads.index(min(loads))
    loads[w] += sizes[i]
    shares[w].append(i)
  procs, errs = [], []
  for share in shares:
    errs.append(tempfile.TemporaryFile())  # a file: a chatty worker cannot fill a pipe
    procs.append(subprocess.Popen([sys.executable, "-m", "dlm.data.shards"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=errs[-1]))
  for proc, share in zip(procs, shares):  # a share is a few small tuples: no pipe fills up
    proc.stdin.write(pickle.dumps([jobs[i] for i in share]))
    proc.stdin.close()
  outs = []
  for proc, err in zip(procs, errs):
    out = proc.stdout.read()
    proc.wait()
    err.seek(0)
    outs.append((proc.returncode, out, err.read()))
    err.close()
  written = [None] * len(jobs)
  for (code, out, err), share in zip(outs, shares):
    if code or not out:
      last = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit status {code}"]
      raise DlmError(f"a preparation worker failed: {last[0]}")
    result = pickle.loads(out)
    if isinstance(result, str):  # the DlmError a worker met
      raise DlmError(result)
    for i, files in zip(share, result):
      written[i] = files
  return written


def _worker() -> None:
  """A worker process: pickled jobs on stdin, their `_write_piece` results (or a DlmError's
  message) pickled on stdout; nothing else there (library chatter goes to stderr, logging is
  quiet)."""
  from absl import logging  # pylint: disable=g-import-not-at-top

  logging.set_verbosity(logging.ERROR)
  out = os.fdopen(os.dup(1), "wb")
  os.dup2(2, 1)
  jobs = pickle.loads(sys.stdin.buffer.read())
  try:
    result = [_write_piece(job) for job in jobs]
  except DlmError as e:
    result = str(e)
  out.write(pickle.dumps(result))
  out.close()


_BUILDERS: dict = {}


def _write_piece(job) -> dict[str, tuple[str, int, int]]:
  """Writes one piece's examples, a file per split (as TFDS's array_record adapter writes,
  `group_size:1`): {split: (path, examples, bytes)}."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top

  cls, config, root, index, piece, out = job
  if (cls, config.name, root) not in _BUILDERS:  # one per worker, not one per piece
    _BUILDERS.clear()
    _BUILDERS[cls, config.name, root] = cls(config=config, data_dir=root,
                                            file_format="array_record")
  builder = _BUILDERS[cls, config.name, root]
  features = builder.info.features
  serializer = example_serializer.ExampleSerializer(features.get_serialized_info())
  writers, files = {}, {}
  try:
    for split, example in builder._piece_examples(piece):  # pylint: disable=protected-access
      if split not in writers:
        path = os.path.join(out, f"piece-{index:05d}-{split}.tmp")
        writers[split] = array_record_module.ArrayRecordWriter(path, "group_size:1")
        files[split] = [path, 0, 0]
      record = serializer.serialize_example(features.encode_example(example))
      writers[split].write(record)
      files[split][1] += 1
      files[split][2] += len(record)
  finally:
    for writer in writers.values():
      writer.close()
  return {split: tuple(f) for split, f in files.items()}


if __name__ == "__main__":
  _worker()
