"""What the benchmark scripts share: the settings train.py starts with, the synthetic model's
flags and batches, and printing a result table (also into `--out`)."""

import os
import sys

import numpy as np
from absl import flags


def start_as_train_py() -> None:
  """Runs the script again, once, with the allocator setting train.py and sample.py start
  with (their first lines: `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` unless set), so a bench
  without environment variables measures what a user's run gets. Call it before importing
  JAX."""
  if sys.platform == "linux" and "GLIBC_TUNABLES" not in os.environ:
    os.environ["GLIBC_TUNABLES"] = "glibc.malloc.hugetlb=1"
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


class Vocab:
  """A stand-in tokenizer: a synthetic model needs only its vocabulary size and mask id."""

  def __init__(self, size: int):
    self.vocab_size, self.mask_id = size, size - 1


def define_model_flags(*, width: int, depth: int, heads: int, seq_len: int, batch_size: int,
                       vocab: int, batch_help: str = "Global batch.") -> None:
  """The synthetic model's shape: --width --depth --heads --seq_len --batch_size --vocab."""
  for name, value in (("width", width), ("depth", depth), ("heads", heads),
                      ("seq_len", seq_len), ("vocab", vocab)):
    flags.DEFINE_integer(name, value, f"Model {name}.")
  flags.DEFINE_integer("batch_size", batch_size, batch_help)


def synthetic_batch(rng: np.random.Generator, shape: tuple[int, ...], vocab: int) -> dict:
  """Random tokens (never the mask id), one segment per row, positions 0..L-1; `shape` is
  (..., batch, length)."""
  return {"tokens": rng.integers(0, vocab - 1, shape, dtype=np.int32),
          "segment_ids": np.ones(shape, np.int32),
          "positions": np.broadcast_to(np.arange(shape[-1], dtype=np.int32), shape).copy()}


def emit(text: str, out: str | None) -> None:
  """Prints a result (a markdown table) and writes it to `out` if given."""
  print(text)
  if out:
    with open(out, "w") as f:
      f.write(text + "\n")


def ensure_trained(config: str, workdir: str, **overrides) -> str:
  """Trains `config` (a configs/ path, relative to the repository) into `workdir` with the
  config `overrides` unless the workdir already holds checkpoints; returns the workdir."""
  import os  # pylint: disable=g-import-not-at-top

  from dlm import config as config_lib  # pylint: disable=g-import-not-at-top
  from dlm.train import loop  # pylint: disable=g-import-not-at-top

  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    loop.train(config_lib.from_file(os.path.join(root, config), **overrides), workdir)
  return workdir
