"""Reading a workdir: its stored config, and its model for sampling, evaluation or as a
pretrained source. Nothing here trains; `dlm.train.loop` resumes training on its own.

A damaged newest checkpoint is skipped with a note on stderr (the next intact one is used); an
explicitly named `step` that is damaged is an error naming the broken item.
"""

from __future__ import annotations

from flax import nnx

from dlm import distributed, models, sharding
from dlm.errors import DlmError
from dlm.train import checkpoint as ckpt_lib
from dlm.train import optimizer as optim
from dlm.train import state as state_lib


def read_config(workdir: str, step: int | None = None):
  """The config stored with a workdir's checkpoint (the newest readable one unless `step`)."""
  ckpts = ckpt_lib.Checkpoints(workdir, read_only=True, async_save=False)
  try:
    return ckpts.first_intact(ckpts.read_config, step)[1]
  finally:
    ckpts.close()


def load(workdir: str, which: str = "ema", step: int | None = None, mesh=None):
  """(config, tokenizer, model, step) from a workdir's checkpoint (the newest intact one
  unless `step`): nothing else is needed. The parameters (`which`: 'ema' or 'params') are
  placed on `mesh` (default: all devices)."""
  if which not in ("ema", "params"):
    raise DlmError(f"which parameters: 'ema' or 'params', got {which!r}")
  mesh = mesh or sharding.make_mesh((-1, 1, 1))

  def read(s):
    config = ckpts.read_config(s)
    tokenizer = ckpts.read_tokenizer(s, config)
    model_fn = lambda rngs: models.build(config, tokenizer, rngs)  # noqa: E731
    tx, _ = optim.optimizer(config.train)
    graphdef, abstract_state, shardings = state_lib.create_abstract(
        model_fn, tx, mesh, config.mesh.rules, config.train.seed)
    params = ckpts.restore_params(
        s, state_lib.abstract(abstract_state.params, shardings.params), which)
    return config, tokenizer, nnx.merge(graphdef, params)

  ckpts = ckpt_lib.Checkpoints(workdir, read_only=True, async_save=False)
  try:
    s, (config, tokenizer, model), skipped = ckpts.first_intact(read, step)
  finally:
    ckpts.close()
  for e in skipped:
    distributed.say(f"dlm: skipped the damaged checkpoint at step {e.step} ({e.item}: "
                    f"{e.reason}); using step {s}")
  return config, tokenizer, model, s
