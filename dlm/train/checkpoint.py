"""Checkpoints: one Orbax `CheckpointManager` in `WORKDIR/checkpoints`.

Each step holds everything a later stage needs, as separate items:
  params, ema, opt_state, meta (step, rng)  the train state (sharded arrays)
  data       the grain iterator's position (one file per process)
  config     the run's config (JSON)
  tokenizer  the tokenizer (its `tokenizer.json`, as JSON)
so `sample.py --workdir DIR` needs nothing else, and a resumed run continues exactly.

Orbax writes each step into a temporary directory and renames it when complete, so a crash or
SIGKILL never leaves a half-written checkpoint that a restore could pick up. Restoring takes the
target shardings from the current mesh, which may differ from the one that saved.
"""

from __future__ import annotations

import json
import os

import grain
import jax
import orbax.checkpoint as ocp
from ml_collections import ConfigDict

from dlm.data.tokenizer import Tokenizer
from dlm.errors import DlmError
from dlm.train.state import TrainState

ARRAY_ITEMS = ("params", "ema", "opt_state", "meta")


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
    handlers = {name: ocp.StandardCheckpointHandler() for name in ARRAY_ITEMS}
    handlers.update(config=ocp.JsonCheckpointHandler(), tokenizer=ocp.JsonCheckpointHandler(),
                    data=grain.checkpoint.CheckpointHandler())
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, state: TrainState, data_iterator, config, tokenizer: Tokenizer) -> None:
    step = int(jax.device_get(state.step))
    args = dict(
        params=ocp.args.StandardSave(state.params),
        ema=ocp.args.StandardSave(state.ema),
        opt_state=ocp.args.StandardSave(state.opt_state),
        meta=ocp.args.StandardSave({"step": state.step, "rng": state.rng}),
        config=ocp.args.JsonSave(json.loads(config.to_json())),
        tokenizer=ocp.args.JsonSave(json.loads(tokenizer.hf.to_str())),
    )
    if data_iterator is not None:
      args["data"] = grain.checkpoint.CheckpointSave(data_iterator.grain_iterator)
    self.manager.save(step, args=ocp.args.Composite(**args), force=True)

  def restore(self, step: int, abstract_state: TrainState, data_iterator=None) -> TrainState:
    """Restores onto the shardings carried by `abstract_state` (any mesh)."""
    args = dict(
        params=ocp.args.StandardRestore(abstract_state.params),
        ema=ocp.args.StandardRestore(abstract_state.ema),
        opt_state=ocp.args.StandardRestore(abstract_state.opt_state),
        meta=ocp.args.StandardRestore({"step": abstract_state.step, "rng": abstract_state.rng}),
    )
    if data_iterator is not None:
      args["data"] = grain.checkpoint.CheckpointRestore(data_iterator.grain_iterator)
    out = self.manager.restore(step, args=ocp.args.Composite(**args))
    return TrainState(step=out["meta"]["step"], params=out["params"],
                      opt_state=out["opt_state"], ema=out["ema"], rng=out["meta"]["rng"])

  def restore_params(self, step: int, abstract_params, which: str = "ema"):
    """Only the parameters (`params` or `ema`), e.g. for sampling."""
    out = self.manager.restore(
        step, args=ocp.args.Composite(**{which: ocp.args.StandardRestore(abstract_params)}))
    return out[which]

  def param_shapes(self, step: int) -> dict:
    """Shapes of the saved parameters, read from metadata (no arrays loaded)."""
    meta = self.manager.item_metadata(step)
    tree = meta["params"] if "params" in meta else None
    if tree is None:
      out = self.manager.restore(step, args=ocp.args.Composite(
          params=ocp.args.StandardRestore()))
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
