"""An ADJUST sampler head (dlm/models/joint_head.py) on a frozen base masked model.

  python -m dlm.joint_data --base=runs/joint_base --out=runs/joint_traj   # trajectories, once
  python train.py --config=configs/joint_head.py:runs/joint_base,runs/joint_traj \
      --workdir=runs/joint_head
  python sample.py --workdir=runs/joint_head --sampler=adjust --steps=16 --length=64

The argument is `BASE_WORKDIR,TRAJECTORY_DIR` (default `runs/joint_base,runs/joint_traj`; if
that base has no checkpoint yet, its architecture is configs/joint_base.py's, and training
stops at train.init_from until it has one). The model keys (the base's architecture),
diffusion and mesh come from the base's stored config, so the head's workdir alone samples;
the data are the base's own exact samples with their reveal order, read pre-tokenized with the
base's tokenizer. The checkpoint holds the frozen base too (train.init_from / init_into).
"""

import os

from dlm.config import base_config
from dlm.errors import DlmError


def _merge(into, values: dict) -> None:
  for k, v in values.items():
    if k not in into:
      continue  # a key of an older config that this code no longer has
    if isinstance(v, dict):
      _merge(into[k], v)
    else:
      into[k] = v


def _base(base_dir: str, default: bool) -> dict:
  from dlm.train import loop  # pylint: disable=g-import-not-at-top

  try:
    return loop.read_config(base_dir).to_dict()
  except DlmError:
    if not default:
      raise
  import importlib.util  # pylint: disable=g-import-not-at-top

  spec = importlib.util.spec_from_file_location(
      "joint_base", os.path.join(os.path.dirname(os.path.abspath(__file__)), "joint_base.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config().to_dict()


def get_config(arg: str = ""):
  default = not arg
  base_dir, _, traj_dir = (arg or "runs/joint_base,runs/joint_traj").partition(",")
  if not base_dir or not traj_dir:
    raise DlmError("configs/joint_head.py needs BASE_WORKDIR,TRAJECTORY_DIR after the colon")
  stored = _base(base_dir, default)
  if stored["model"]["family"] != "masked":
    raise DlmError(f"the base {base_dir!r} is a {stored['model']['family']} model; a joint "
                   "head needs a masked one")
  config = base_config()
  for section in ("model", "diffusion", "mesh"):
    _merge(config[section], stored[section])
  config.model.family = "joint_head"
  config.data.update(
      dataset=f"jsonl:{os.path.join(traj_dir, '{split}.jsonl')}", text_feature="text",
      pretokenized=True, seq_len=stored["data"]["seq_len"], packing="pad", source_feature="")
  config.data.tokenizer.path = os.path.join(traj_dir, "tokenizer.json")
  config.data.tokenizer.num_reserved_pads = stored["data"]["tokenizer"]["num_reserved_pads"]
  config.data.tokenizer.special_tokens.update(stored["data"]["tokenizer"]["special_tokens"])
  # 3 unrolls: the bench samples at most 4 tokens per full pass (the paper trains 7)
  config.joint.update(unrolls=3, noising="trajectory", zero_init=True)
  config.train.update(
      init_from=base_dir, init_into="base", init_which="ema",
      steps=3000, batch_size=32, lr=1e-3, b2=0.95, warmup_steps=50, lr_schedule="constant",
      ema_decay=0.999, log_every=100, eval_every=1000, checkpoint_every=500, eval_batches=8)
  return config
