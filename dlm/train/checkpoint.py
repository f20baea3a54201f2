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

import dataclasses
import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from ml_collections import ConfigDict

from dlm.data.tokenizer import Tokenizer
from dlm.errors import DlmError
from dlm.train import batches as batches_lib
from dlm.train.state import TrainState

ARRAY_ITEMS = ("params", "ema", "opt_state", "meta")


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
    if len(counts) != 1:
      return None
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


def _type_handlers() -> ocp.type_handlers.TypeHandlerRegistry:
  """Orbax's handlers for the leaves of our trees; see the module docstring on replicas."""
  th = ocp.type_handlers
  scalar = th.ScalarHandler()
  return th.create_type_handler_registry(
      (int, scalar), (float, scalar), (np.number, scalar), (np.ndarray, th.NumpyHandler()),
      (jax.Array, th.ArrayHandler(use_replica_parallel=jax.process_count() > 1)))


def _restore(abstract=None) -> ocp.args.PyTreeRestore:
  """Restores onto `abstract`'s shapes, dtypes and shardings (None: as saved, on host)."""
  if abstract is None:
    return ocp.args.PyTreeRestore()
  return ocp.args.PyTreeRestore(
      item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract))


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


class Checkpoints:
  """Save and restore train state, data position, config and tokenizer by step."""

  def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True,
               read_only: bool = False):
    self.directory = checkpoint_dir(workdir)
    if read_only and not os.path.isdir(self.directory):
      raise DlmError(f"no checkpoint in {workdir!r} (no {self.directory})")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, enable_async_checkpointing=async_save, create=not read_only,
        read_only=read_only)
    registry = _type_handlers()
    handlers = {name: ocp.PyTreeCheckpointHandler(type_handler_registry=registry)
                for name in ARRAY_ITEMS}
    handlers.update(config=ocp.JsonCheckpointHandler(), tokenizer=ocp.JsonCheckpointHandler(),
                    data=DataHandler())
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

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
    self.manager.save(step, args=ocp.args.Composite(**args), force=True)

  def restore(self, step: int, abstract_state: TrainState, data_iterator=None) -> TrainState:
    """Restores onto the shardings carried by `abstract_state` (any mesh)."""
    args = dict(
        params=_restore(abstract_state.params),
        ema=_restore(abstract_state.ema),
        opt_state=_restore(abstract_state.opt_state),
        meta=_restore({"step": abstract_state.step, "rng": abstract_state.rng}),
    )
    if data_iterator is not None:
      args["data"] = DataRestore(data_iterator)
    out = self.manager.restore(step, args=ocp.args.Composite(**args))
    return TrainState(step=out["meta"]["step"], params=out["params"],
                      opt_state=out["opt_state"], ema=out["ema"], rng=out["meta"]["rng"])

  def data_position(self, step: int) -> batches_lib.SavedPosition | None:
    """How the data order was saved at `step` (streams, processes, batches drawn)."""
    try:
      return self.manager.item_metadata(step)["data"]
    except (KeyError, FileNotFoundError):
      return None

  def restore_params(self, step: int, abstract_params, which: str = "ema"):
    """Only the parameters (`params` or `ema`), e.g. for sampling."""
    out = self.manager.restore(
        step, args=ocp.args.Composite(**{which: _restore(abstract_params)}))
    return out[which]

  def param_shapes(self, step: int) -> dict:
    """Shapes of the saved parameters, read from metadata (no arrays loaded)."""
    meta = self.manager.item_metadata(step)
    tree = meta["params"] if "params" in meta else None
    if tree is None:
      out = self.manager.restore(step, args=ocp.args.Composite(params=_restore()))
      tree = out["params"]
    return jax.tree.map(lambda m: tuple(m.shape), tree, is_leaf=lambda x: hasattr(x, "shape"))

  def read_config(self, step: int) -> ConfigDict:
    out = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return ConfigDict(out["config"])

  def read_tokenizer(self, step: int, config) -> Tokenizer:
    import tokenizers  # pylint: disable=g-import-not-at-top

    out = self.manager.restore(step, args=ocp.args.Composite(tokenizer=ocp.args.JsonRestore()))
    hf = tokenizers.Tokenizer.from_str(json.dumps(out["tokenizer"]))
    t = config.data.tokenizer
    overrides = {k: v for k, v in dict(t.special_tokens).items() if v}
    return Tokenizer(hf, t.num_reserved_pads, overrides)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
