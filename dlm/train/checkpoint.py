"""Checkpoints: one Orbax `CheckpointManager` in `WORKDIR/checkpoints`.

Each step holds everything a later stage needs, as separate items:
  params, ema, opt_state, meta (step, rng)  the train state (sharded arrays)
  data       the training data position: one file per data stream (`DataHandler`, see
             dlm/train/batches.py), restorable on any process count
  config     the run's config (JSON)
  tokenizer  the tokenizer (its `tokenizer.json`, as JSON)
so `sample.py --workdir DIR` needs nothing else, and a resumed run continues exactly.

Arrays are saved by Orbax's `ArrayHandler`, replica-parallel (each replica of a replicated array
writing a slice of it) only when the run spans processes: within one process the replicas'
slices are the same bytes written by the same process, at the cost of one sliced copy per
replica and array (thousands of small dispatches for a model on 8 local devices).

Orbax writes each step into a temporary directory and renames it when complete, so a crash or
SIGKILL never leaves a half-written checkpoint that a restore could pick up. Restoring takes the
target shardings from the current mesh, which may differ from the one that saved, and on any
number of processes: every process writes its shards of the arrays (Orbax multi-host), process
0 the JSON items.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import sys
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
import tokenizers
from etils import epath
from ml_collections import ConfigDict

from dlm import config as config_lib
from dlm.data.tokenizer import Tokenizer
from dlm.errors import DlmError
from dlm.train import batches as batches_lib
from dlm.train import workdir as workdir_lib
from dlm.train.state import TrainState

ARRAY_ITEMS = ("params", "ema", "opt_state", "meta")
_CODES = re.compile(r"\b(DATA_LOSS|NOT_FOUND|INVALID_ARGUMENT|FAILED_PRECONDITION|OUT_OF_RANGE|"
                    r"UNKNOWN|INTERNAL)\b[^\n]*")


class DamagedCheckpoint(DlmError):
  """One item of a saved step cannot be read (truncated or zeroed arrays, deleted metadata,
  garbage JSON, a missing item): the step is unusable, older ones may not be."""

  def __init__(self, directory: str, step: int, item: str, reason: str):
    self.step, self.item, self.reason = step, item, reason
    super().__init__(f"the checkpoint at step {step} in {directory} is damaged ({item}: "
                     f"{reason})")


_previous_unraisable_hook = None


def _drop_orbax_leftovers() -> None:
  """After a failed read or write, Orbax has left its other TensorStore reads or writes in
  flight; as they finish they call back into an asyncio loop that is gone, or are collected
  unawaited, and Python prints each as an "Exception ignored" traceback (dozens, some at
  exit). The failure itself is reported as one DlmError, so those leftovers are dropped; every
  other unraisable exception is printed as before. Installed once, with the first manager."""
  global _previous_unraisable_hook
  if _previous_unraisable_hook is not None:
    return
  _previous_unraisable_hook = sys.unraisablehook

  def hook(unraisable):
    exc, obj = unraisable.exc_value, unraisable.object
    code = getattr(obj, "cr_code", None)
    if ((isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed")
        or (code is not None and "orbax" in code.co_filename)):
      return
    _previous_unraisable_hook(unraisable)

  sys.unraisablehook = hook


def _reason(e: BaseException, limit: int = 200) -> str:
  """A short description of why reading failed: the most specific status line in the
  exception or its causes (TensorStore's DATA_LOSS, NOT_FOUND, ...), else its first line."""
  chain, seen = [], set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    chain.append(e)
    e = e.__cause__ or e.__context__
  for err in chain:
    found = _CODES.search(str(err))
    if found:
      return found.group(0)[:limit]
  first = chain[0]
  if isinstance(first, KeyError) and "not found" in str(first):
    return "missing"
  lines = [line.strip() for line in str(first).splitlines() if line.strip()]
  return f"{type(first).__name__}: {lines[0] if lines else ''}"[:limit]


class DataHandler(ocp.CheckpointHandler):
  """The training data position: `stream_<s>-of-<S>.json` per stream, each written by the
  process that owns the stream (`batches.Plan.owned`), each holding the stream's grain
  iterator state and the batches drawn. Reads grain's `process_<i>-of-<n>.json` as well."""

  def save(self, directory: epath.Path, args: "DataSave") -> None:
    for s, state in args.states.items():
      record = {"stream": s, "streams": args.streams, "batches": args.batches,
                "process_count": args.process_count, "state": state}
      (directory / batches_lib.stream_file(s, args.streams)).write_text(json.dumps(record))

  def _files(self, directory: epath.Path) -> dict[tuple[int, int], epath.Path]:
    return {parsed: path for path in directory.iterdir()
            if (parsed := batches_lib.parse_stream_file(path.name)) is not None}

  def restore(self, directory: epath.Path, args: "DataRestore") -> Any:
    it = args.item
    streams = it.plan.streams
    files = {s: path for (s, n), path in self._files(directory).items() if n == streams}
    states, drawn = {}, set()
    for s in it.plan.local:
      if s not in files:
        raise DlmError(f"the checkpoint in {directory} lacks the data position of stream {s} "
                       f"of {streams}")
      record = json.loads(files[s].read_text())
      if "state" not in record:  # grain's own file: the bare state
        record = {"state": record, "batches": None}
      states[s] = record["state"]
      drawn.add(record["batches"])
    if len(drawn) != 1:
      raise DlmError(f"the checkpoint in {directory} holds data streams at different positions "
                     f"({sorted(drawn, key=str)} batches)")
    it.set_stream_states(states, drawn.pop() or 0)
    return it

  def metadata(self, directory: epath.Path) -> batches_lib.SavedPosition | None:
    files = self._files(directory)
    counts = {n for _, n in files}
    if not counts:
      raise ValueError(f"no data position file in {directory}")
    if len(counts) != 1:
      raise ValueError(f"data position files of several stream counts {sorted(counts)}")
    record = json.loads(next(iter(files.values())).read_text())
    if "state" not in record:  # grain's per-process files: one stream per process
      n = counts.pop()
      return batches_lib.SavedPosition(n, n, None)
    return batches_lib.SavedPosition(record["streams"], record["process_count"],
                                     record["batches"])


@ocp.args.register_with_handler(DataHandler, for_save=True)
@dataclasses.dataclass
class DataSave(ocp.args.CheckpointArgs):
  states: dict  # stream -> grain iterator state (this process's owned streams)
  streams: int
  batches: int
  process_count: int


@ocp.args.register_with_handler(DataHandler, for_restore=True)
@dataclasses.dataclass
class DataRestore(ocp.args.CheckpointArgs):
  item: Any  # a batches.TrainBatches, restored in place


def _type_handlers(copy_host_arrays: bool = True) -> ocp.type_handlers.TypeHandlerRegistry:
  """Orbax's handlers for the leaves of our trees; see the module docstring on replicas.
  Numpy arrays are copied before an asynchronous save returns (the caller may change them);
  a synchronous save writes them in place (a converted model is not held twice)."""
  th = ocp.type_handlers
  scalar = th.ScalarHandler()
  return th.create_type_handler_registry(
      (int, scalar), (float, scalar), (np.number, scalar),
      (np.ndarray, th.NumpyHandler(deepcopy_host_arrays=copy_host_arrays)),
      (jax.Array, th.ArrayHandler(use_replica_parallel=jax.process_count() > 1)))


def _restore(abstract=None) -> ocp.args.PyTreeRestore:
  """Restores onto `abstract`'s shapes, dtypes and shardings (None: as saved, on host)."""
  if abstract is None:
    return ocp.args.PyTreeRestore()
  return ocp.args.PyTreeRestore(
      item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract))


@contextlib.contextmanager
def _absl_quiet():
  """Orbax's notices (absl warnings) kept off the console of library users."""
  logger = logging.getLogger("absl")
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)


def checkpoint_dir(workdir: str) -> str:
  workdir_lib.check_local(workdir)
  return os.path.join(os.path.abspath(workdir), "checkpoints")


_OS_ERROR = re.compile(r"\[os_error_code='(\d+)'\]")


def _write_reason(e: BaseException) -> str:
  """Why a write failed: the operating system's words where there are some (no space left,
  read-only file system, permission denied), else the most specific status line."""
  seen = set()
  err = e
  while err is not None and id(err) not in seen:
    seen.add(id(err))
    if isinstance(err, OSError) and err.strerror:
      return err.strerror
    code = _OS_ERROR.search(str(err))  # TensorStore's wording of an OS error
    if code:
      return os.strerror(int(code.group(1)))
    err = err.__cause__ or err.__context__
  return _reason(e)


def _params_only(step_dir: str) -> bool:
  return (os.path.isdir(os.path.join(step_dir, "params"))
          and not os.path.isdir(os.path.join(step_dir, "opt_state")))


def params_only(workdir: str) -> bool:
  """Whether a workdir's newest step holds parameters only (a converted model), read from
  its directory names before anything is opened or written."""
  directory = checkpoint_dir(workdir)
  steps = sorted(int(n) for n in os.listdir(directory) if n.isdigit()) if os.path.isdir(
      directory) else []
  return bool(steps) and _params_only(os.path.join(directory, str(steps[-1])))


class Checkpoints:
  """Save and restore train state, data position, config and tokenizer by step.

  Every read names what it could not read: a `DamagedCheckpoint` (a `DlmError`) with the step
  and the item (`params`, `ema`, `opt_state`, `meta`, `data`, `config`, `tokenizer`), so that
  callers can fall back to an older step. Write failures (a full disk, a read-only or vanished
  directory) become a `DlmError` that names the path and the newest intact step."""

  def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True,
               read_only: bool = False):
    self.workdir = workdir
    self.directory = checkpoint_dir(workdir)
    if read_only and not os.path.isdir(self.directory):
      raise DlmError(f"no checkpoint in {workdir!r} (no {self.directory})")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else keep, save_interval_steps=0 if read_only else 1,
        enable_async_checkpointing=async_save and not read_only, create=not read_only,
        read_only=read_only)
    registry = _type_handlers(copy_host_arrays=async_save and not read_only)
    handlers = {name: ocp.PyTreeCheckpointHandler(type_handler_registry=registry)
                for name in ARRAY_ITEMS}
    handlers.update(config=ocp.JsonCheckpointHandler(), tokenizer=ocp.JsonCheckpointHandler(),
                    data=DataHandler())
    self._saving = None  # the step of the last save started
    _drop_orbax_leftovers()  # an asynchronous save can fail before anyone asks
    try:
      with _absl_quiet():  # Orbax warns on every read-only manager
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_handlers=handlers)
    except OSError as e:
      raise DlmError(f"cannot open the checkpoint directory {self.directory}: "
                     f"{_write_reason(e)}") from None

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def first_intact(self, read, step: int | None = None, hint: str = ""):
    """`(s, read(s), skipped)`: `read` of step `step`, or of the newest step it succeeds on
    (`skipped`: the DamagedCheckpoints of the newer ones). A missing step, or no intact step,
    is a DlmError (`hint` added to the latter); a damaged `step` named explicitly raises."""
    steps = self.all_steps()
    if not steps:
      raise DlmError(f"no checkpoint in {self.workdir!r}")
    if step is not None and step not in steps:
      raise DlmError(f"no checkpoint at step {step} in {self.workdir!r} (steps: {steps})")
    skipped = []
    for s in [step] if step is not None else steps[::-1]:
      try:
        return s, read(s), skipped
      except DamagedCheckpoint as e:
        if step is not None:
          raise
        skipped.append(e)
    raise DlmError(f"no intact checkpoint in {self.workdir!r}: " + "; ".join(
        f"step {e.step} ({e.item}: {e.reason})" for e in skipped) + hint)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def _read(self, step: int, item: str, fn):
    try:
      return fn()
    except DamagedCheckpoint:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise DamagedCheckpoint(self.directory, step, item, _reason(e)) from e

  def _write_error(self, step: int, e: BaseException) -> DlmError:
    try:
      self.manager.reload()
      intact = [s for s in self.manager.all_steps() if s != step]
    except Exception:  # pylint: disable=broad-except
      intact = []
    kept = (f"the checkpoint at step {max(intact)} is intact" if intact
            else "no earlier checkpoint exists")
    return DlmError(f"writing the checkpoint at step {step} to {self.directory} failed "
                    f"({_write_reason(e)}); {kept}")

  def save(self, state: TrainState, data_iterator, config, tokenizer: Tokenizer) -> None:
    step = int(jax.device_get(state.step))
    args = dict(
        params=ocp.args.PyTreeSave(state.params),
        ema=ocp.args.PyTreeSave(state.ema),
        opt_state=ocp.args.PyTreeSave(state.opt_state),
        meta=ocp.args.PyTreeSave({"step": state.step, "rng": state.rng}),
        config=ocp.args.JsonSave(json.loads(config.to_json())),
        tokenizer=ocp.args.JsonSave(json.loads(tokenizer.hf.to_str())),
    )
    if data_iterator is not None:  # the position now, not when an async save gets to it
      args["data"] = DataSave(
          states=data_iterator.stream_states(), streams=data_iterator.plan.streams,
          batches=data_iterator.batches, process_count=jax.process_count())
    self.wait()  # an earlier asynchronous save's failure is reported as that step's
    try:
      self.manager.save(step, args=ocp.args.Composite(**args), force=True)
    except Exception as e:  # pylint: disable=broad-except
      raise self._write_error(step, e) from None
    self._saving = step

  def save_params(self, step: int, params, config, tokenizer: Tokenizer) -> None:
    """A parameters-only checkpoint (a converted released model): `params` (a pure dict of
    arrays, host numpy or jax), the config and the tokenizer; no optimizer state, EMA or data
    position. Sampling, evaluation and `train.init_from` read it (its `params` stand in for
    the EMA); resuming training from it is refused (`params_only`)."""
    args = dict(params=ocp.args.PyTreeSave(params),
                config=ocp.args.JsonSave(json.loads(config.to_json())),
                tokenizer=ocp.args.JsonSave(json.loads(tokenizer.hf.to_str())))
    try:
      self.manager.save(step, args=ocp.args.Composite(**args), force=True)
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._write_error(step, e) from None

  def params_only(self, step: int) -> bool:
    """Whether `step` holds parameters without a train state (`save_params`)."""
    return _params_only(os.path.join(self.directory, str(step)))

  def restore(self, step: int, abstract_state: TrainState, data_iterator=None) -> TrainState:
    """Restores onto the shardings carried by `abstract_state` (any mesh), item by item, so
    that a damaged one is named."""
    wanted = {"params": abstract_state.params, "ema": abstract_state.ema,
              "opt_state": abstract_state.opt_state,
              "meta": {"step": abstract_state.step, "rng": abstract_state.rng}}
    out = {}
    for name, abstract in wanted.items():
      out[name] = self._read(step, name, lambda n=name, a=abstract: self.manager.restore(
          step, args=ocp.args.Composite(**{n: _restore(a)}))[n])
    if data_iterator is not None:
      self._read(step, "data", lambda: self.manager.restore(
          step, args=ocp.args.Composite(data=DataRestore(data_iterator))))
    return TrainState(step=out["meta"]["step"], params=out["params"],
                      opt_state=out["opt_state"], ema=out["ema"], rng=out["meta"]["rng"])

  def data_position(self, step: int) -> batches_lib.SavedPosition:
    """How the data order was saved at `step` (streams, processes, batches drawn)."""
    return self._read(step, "data", lambda: self.manager.item_metadata(step)["data"])

  def restore_params(self, step: int, abstract_params, which: str = "ema"):
    """Only the parameters (`params` or `ema`; a parameters-only checkpoint's `params` for
    both), e.g. for sampling."""
    if self.params_only(step):
      which = "params"
    return self._read(step, which, lambda: self.manager.restore(
        step, args=ocp.args.Composite(**{which: _restore(abstract_params)}))[which])

  def param_shapes(self, step: int) -> dict:
    """Shapes of the saved parameters, read from metadata (no arrays loaded)."""

    def read():
      meta = self.manager.item_metadata(step)
      tree = meta["params"] if "params" in meta else None
      if tree is None:
        tree = self.manager.restore(step, args=ocp.args.Composite(params=_restore()))["params"]
      return jax.tree.map(lambda m: tuple(m.shape), tree, is_leaf=lambda x: hasattr(x, "shape"))

    return self._read(step, "params", read)

  def read_config(self, step: int) -> ConfigDict:
    """The run's config, on today's base config (keys added since take their defaults)."""

    def read():
      stored = self.manager.restore(
          step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
      if not isinstance(stored, dict) or not isinstance(stored.get("model"), dict):
        raise ValueError("not a dlm config")
      return config_lib.from_stored(stored)

    return self._read(step, "config", read)

  def read_tokenizer(self, step: int, config) -> Tokenizer:
    def read():
      out = self.manager.restore(
          step, args=ocp.args.Composite(tokenizer=ocp.args.JsonRestore()))
      return tokenizers.Tokenizer.from_str(json.dumps(out["tokenizer"]))

    hf = self._read(step, "tokenizer", read)
    section = config.data.tokenizer
    overrides = {k: v for k, v in dict(section.special_tokens).items() if v}
    return Tokenizer(hf, section.num_reserved_pads, overrides,
                     tuple(section.get("stop_tokens", ())))

  def set_aside(self, step: int, kind: str) -> str:
    """Moves step `step` out of the way, to `WORKDIR/<kind>_checkpoints/<step>` (kept for the
    user to inspect or delete); returns where it went."""
    target_dir = os.path.join(os.path.dirname(self.directory), f"{kind}_checkpoints")
    os.makedirs(target_dir, exist_ok=True)
    target = os.path.join(target_dir, str(step))
    if os.path.exists(target):
      target += f"-{time.strftime('%Y%m%d-%H%M%S')}"
    shutil.move(os.path.join(self.directory, str(step)), target)
    self.manager.reload()
    return target

  def wait(self) -> None:
    """Waits for an asynchronous save; its failure is a DlmError naming its step."""
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._write_error(self._saving, e) from None

  def close(self) -> None:
    try:
      self.wait()
    finally:
      self.manager.close()
