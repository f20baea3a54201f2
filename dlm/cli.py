"""Command-line plumbing shared by `train.py`, `sample.py` and `python -m dlm.data`.

Configs are ml_collections files (`--config=configs/x.py`, overrides `--config.a.b=v`) as in
md4 and big_vision. A mistake on the command line (unknown key, bad value, missing file) ends in
one `error: ...` line and exit status 2, never a traceback.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys

from absl import flags, logging
from ml_collections import config_flags

from dlm import config as config_lib
from dlm.errors import DlmError, exit_on_user_error

FLAGS = flags.FLAGS


def define_config_flag() -> None:
  config_flags.DEFINE_config_file(
      "config", None, "Experiment config file (configs/*.py).", lock_config=True
  )


def define_distributed_flags() -> None:
  """`--coordinator_address`, `--num_processes`, `--process_id` (see `dlm.distributed`)."""
  flags.DEFINE_string("coordinator_address", "",
                      "HOST:PORT of process 0's coordinator; '' = from the environment "
                      "(JAX_COORDINATOR_ADDRESS, SLURM, Cloud TPU, ...) or one process.")
  flags.DEFINE_integer("num_processes", 0, "Processes in the run (with --coordinator_address).")
  flags.DEFINE_integer("process_id", -1, "This process's index, 0 .. num_processes - 1.")


def initialize_distributed():
  """Joins the processes named by the flags or the environment; before any device is used."""
  from dlm import distributed  # pylint: disable=g-import-not-at-top

  return distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes,
                                FLAGS.process_id)


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def _describe(e: Exception, argv: list[str]) -> str:
  text = str(e).strip()
  if isinstance(e, (KeyError, AttributeError)):
    key = str(e.args[0]).strip("'\"") if e.args else ""
    for arg in argv:
      if arg.startswith("--config.") and "=" in arg:
        path = arg[len("--config."):].split("=", 1)[0]
        if path.split(".")[-1] == key or key in path.split("."):
          return f"unknown config key {path!r} (from {arg})"
    return f"unknown config key {key!r}"
  if isinstance(e, OSError) and "Failed loading config file" in text:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"cannot load the config file: {lines[-1]}"
  return text.splitlines()[0] if text else type(e).__name__


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing that reports a bad flag or config as one line; quiet library logging."""
  logging.set_verbosity(logging.ERROR)  # library chatter (Orbax, TFDS) stays off the console
  try:
    rest = FLAGS(argv)
    if "config" in FLAGS and FLAGS["config"].present:
      config_lib.validate(FLAGS.config)  # also surfaces a config file that failed to load
  except DlmError as e:
    _fail(str(e))
  except (flags.Error, KeyError, AttributeError, ValueError, TypeError, OSError) as e:
    _fail(_describe(e, argv))
  return rest


def config():
  if FLAGS.config is None:
    raise DlmError("--config is required (for example --config=configs/quickstart.py)")
  return FLAGS.config


@contextlib.contextmanager
def user_errors():
  with exit_on_user_error():
    yield


@contextlib.contextmanager
def stdout_to_stderr():
  """Keeps library chatter (TFDS prints) off stdout, which carries the JSON results."""
  with contextlib.redirect_stdout(sys.stderr):
    yield


@contextlib.contextmanager
def native_stdout_to_stderr():
  """Also keeps native code's writes to file descriptor 1 off stdout (gloo's "[Gloo] Rank ...
  connected" lines in multi-process runs): fd 1 points at stderr inside, C buffers flushed."""
  sys.stdout.flush()
  saved = os.dup(1)
  os.dup2(2, 1)
  try:
    yield
  finally:
    sys.stdout.flush()
    try:
      ctypes.CDLL(None).fflush(None)  # what C/C++ code buffered goes to stderr too
    except (OSError, AttributeError):
      pass
    os.dup2(saved, 1)
    os.close(saved)
