"""Command-line plumbing shared by `train.py`, `sample.py` and `python -m dlm.data`.

Configs are ml_collections files (`--config=configs/x.py`, overrides `--config.a.b=v`) as in
md4 and big_vision. A mistake on the command line (unknown key, bad value, missing file) ends in
one `error: ...` line and exit status 2, never a traceback.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import logging as pylogging
import os
import re
import sys
from typing import Callable

import jax
from absl import flags, logging
from ml_collections import config_flags

from dlm import config as config_lib
from dlm import distributed, sharding
from dlm import samplers
from dlm.processes import nonsim
from dlm.errors import DlmError, exit_on_user_error

FLAGS = flags.FLAGS


def define_config_flag() -> None:
  config_flags.DEFINE_config_file(
      "config", None, "Experiment config file (configs/*.py; file.py:ARG passes ARG to its "
      "get_config); override keys with --config.KEY=VALUE.", lock_config=True
  )


def define_distributed_flags() -> None:
  """`--coordinator_address`, `--num_processes`, `--process_id` (see `dlm.distributed`)."""
  flags.DEFINE_string("coordinator_address", "",
                      "HOST:PORT of process 0's coordinator; '' = from the environment "
                      "(JAX_COORDINATOR_ADDRESS, SLURM, Cloud TPU, ...) or one process.")
  flags.DEFINE_integer("num_processes", 0, "Processes in the run (with --coordinator_address).")
  flags.DEFINE_integer("process_id", -1, "This process's index, 0 .. num_processes - 1.")


def define_workdir_flags(help_text: str = "Training directory with checkpoints.",
                         step: bool = True, params: bool = True) -> None:
  """`--workdir` (required by `workdir()`), and `--step`, `--params` for reading its model."""
  flags.DEFINE_string("workdir", None, help_text)
  if step:
    flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest intact one).")
  if params:
    flags.DEFINE_enum("params", "ema", ["ema", "params"], "EMA or raw parameters.")


def mesh_flag(value: str):
  """The mesh of a `--mesh=DATA,FSDP,TENSOR` flag over all devices (one entry may be -1)."""
  try:
    shape = tuple(int(v) for v in value.split(","))
  except ValueError:
    raise DlmError(f"--mesh={value!r} must be three integers data,fsdp,tensor") from None
  return sharding.make_mesh(shape)


def workdir() -> str:
  if not FLAGS.workdir:
    raise DlmError("--workdir is required")
  return FLAGS.workdir


# Sampling flags: one per `SamplerConfig` field (dlm/samplers/core.py checks their values).
_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
           str: flags.DEFINE_string}


def define_sampling_flags(sampler_help: str = "Sampler (default: the family's first).") -> None:
  """`--sampler`, a flag per sampler option (`samplers.OPTIONS`, with the SamplerConfig field's
  default and help), `--schedule` and `--seed`."""
  flags.DEFINE_string("sampler", None, sampler_help)
  for field in dataclasses.fields(samplers.SamplerConfig):
    if field.name in samplers.OPTIONS:
      _DEFINE[type(field.default)](field.name, field.default, field.metadata["help"])
  flags.DEFINE_string("schedule", None, "JSON extrinsic time schedule (dlm.neodiff_schedule).")
  flags.DEFINE_integer("seed", 0, "Random seed.")


def sampling_options() -> dict:
  """The sampler options of the flags (keyword arguments of `dlm.sample`), checked by
  SamplerConfig, and `--sampler` checked to exist; float64 draws switch on jax_enable_x64."""
  options = {name: FLAGS[name].value for name in samplers.OPTIONS}
  try:
    samplers.SamplerConfig(**options)
  except DlmError as e:
    raise DlmError(f"--{e}") from None
  if FLAGS.sampler:
    samplers.registered(FLAGS.sampler)  # a DlmError naming the known samplers
  if options["float64"]:
    jax.config.update("jax_enable_x64", True)
  return options


def schedule_times():
  """The extrinsic time schedule of `--schedule` (None without one), read and checked."""
  return nonsim.load_schedule(FLAGS.schedule) if FLAGS.schedule else None


def define_output_flag(help_text: str) -> None:
  """`--output`: where a command writes its result besides printing it."""
  flags.DEFINE_string("output", None, help_text)


def check_output(path: str | None, flag: str = "output") -> None:
  """An output file's directory exists and is writable, before any work (a result computed
  for an hour is not lost to a typo)."""
  if path is None:
    return
  directory = os.path.dirname(os.path.abspath(path))
  if os.path.isdir(path):
    raise DlmError(f"--{flag}={path!r} is a directory; give a file name")
  if not os.path.isdir(directory):
    raise DlmError(f"--{flag}={path!r}: the directory {directory!r} does not exist")
  if not os.access(directory, os.W_OK):
    raise DlmError(f"--{flag}={path!r}: the directory {directory!r} is not writable")


def json_command(compute: Callable[[str], dict],
                 write_output: bool = False) -> Callable[[list[str]], None]:
  """`main(argv)` of a command that reads `--workdir` and prints one JSON line (with
  `write_output`, also into the file `--output`, checked before `compute` as any `--output`
  is): `compute(workdir) -> result`, user errors as one line, library chatter on stderr."""

  def main(argv):
    del argv
    with user_errors():
      where = workdir()
      if "output" in FLAGS:
        check_output(FLAGS.output)
      with stdout_to_stderr():
        result = compute(where)
    print_json(result, FLAGS.output if write_output else None)

  return main


def print_json(result: dict, output: str | None = None) -> None:
  """The result line on stdout (and in `output` if given)."""
  line = json.dumps(result)
  print(line)
  if output:
    with open(output, "w") as f:
      f.write(line + "\n")


def initialize_distributed():
  """Joins the processes named by the flags or the environment; before any device is used."""
  return distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes,
                                FLAGS.process_id)


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


_NEAR_MISS = re.compile(r'Did you mean "([^"]+)" instead of "([^"]+)"')


def _unknown_key(e: Exception, argv: list[str]) -> str:
  """`unknown config key 'train.stepz' (from --config.train.stepz=3); did you mean
  'train.steps'?` from ml_collections' KeyError / AttributeError text."""
  text = str(e.args[0]) if e.args else ""
  near = _NEAR_MISS.search(text)
  key = near.group(2) if near else text.splitlines()[0].strip().strip("'\"\\")
  for arg in argv:
    if arg.startswith("--config.") and "=" in arg:
      path = arg[len("--config."):].split("=", 1)[0]
      if key and key in path.split("."):
        out = f"unknown config key {path!r} (from {arg})"
        if near:
          parts = path.split(".")
          parts[parts.index(key)] = near.group(1)
          out += f"; did you mean {'.'.join(parts)!r}?"
        return out
  return f"unknown config key {key!r}" + (f"; did you mean {near.group(1)!r}?" if near else "")


def _describe(e: Exception, argv: list[str]) -> str:
  if isinstance(e, (KeyError, AttributeError)):
    return _unknown_key(e, argv)
  text = str(e).strip()
  if isinstance(e, OSError) and "Failed loading config file" in text:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"cannot load the config file: {lines[-1]}"
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  return lines[0] if lines else type(e).__name__


def _config_spec(argv: list[str]) -> str | None:
  """The value of `--config=SPEC` / `--config SPEC` on the command line, if any."""
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg[len("--config="):]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing that reports a bad flag or config as one line; quiet library logging.

  The config file is loaded once by `config.load_file` first, so that a file that does not
  load (syntax error, no `get_config`, a rejected variant, ...) is named in one clean line
  rather than in ml_collections' traceback text."""
  # Library logging (Orbax, TFDS) stays off the console, errors included: every failure we
  # can name reaches the user as one `error:` line, and Orbax's own log of a failed write
  # would add its traceback before it.
  logging.set_verbosity(logging.FATAL)
  pylogging.getLogger().setLevel(pylogging.CRITICAL)  # other libraries' loggers
  os.environ.setdefault("HF_HUB_VERBOSITY", "critical")  # read when huggingface_hub is imported
  try:
    spec = _config_spec(argv)
    if spec is not None and "config" in FLAGS:
      config_lib.load_file(spec)
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
