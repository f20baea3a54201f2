"""An ADJUST sampler head (dlm/models/joint_head.py) on a frozen base masked model.

  python -m dlm.joint_data --base=runs/joint_base --out=runs/joint_traj   # trajectories, once
  python train.py --config=configs/joint_head.py:runs/joint_base,runs/joint_traj \
      --workdir=runs/joint_head
  python sample.py --workdir=runs/joint_head --sampler=adjust --steps=16 --length=64

The argument is `BASE_WORKDIR,TRAJECTORY_DIR` (default `runs/joint_base,runs/joint_traj`).
When training starts, the head adopts the base's architecture (the `model` keys), its
`diffusion` process and its data layout (`data.seq_len`, the tokenizer's special tokens) from
the base's stored config (the family's `resolve` hook, `joint_head.adopt_base`), so the head's
workdir alone samples; the data are the base's own exact samples with their reveal order, read
pre-tokenized with the base's tokenizer. The checkpoint holds the frozen base too
(train.init_from / init_into).
"""

import os

from dlm.config import base_config
from dlm.errors import DlmError


def get_config(arg: str = ""):
  base_dir, _, traj_dir = (arg or "runs/joint_base,runs/joint_traj").partition(",")
  if not base_dir or not traj_dir:
    raise DlmError("configs/joint_head.py needs BASE_WORKDIR,TRAJECTORY_DIR after the colon")
  config = base_config()
  config.model.family = "joint_head"
  config.data.update(
      dataset=f"jsonl:{os.path.join(traj_dir, '{split}.jsonl')}", text_feature="text",
      pretokenized=True, packing="pad", source_feature="")
  config.data.tokenizer.path = os.path.join(traj_dir, "tokenizer.json")
  # 3 unrolls: the bench samples at most 4 tokens per full pass (the paper trains 7)
  config.joint.update(unrolls=3, noising="trajectory", zero_init=True)
  config.train.update(
      init_from=base_dir, init_into="base", init_which="ema",
      steps=3000, batch_size=32, lr=1e-3, b2=0.95, warmup_steps=50, lr_schedule="constant",
      ema_decay=0.999, log_every=100, eval_every=1000, checkpoint_every=500, eval_batches=8)
  return config
