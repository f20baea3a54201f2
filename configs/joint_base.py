"""The base model of the ADJUST bench (bench/joint_sampling.py): a small masked diffusion model
on 64-token rows of the embedded stdlib prose, the frozen model a joint-sampling head is trained
on (configs/joint_head.py).

  python train.py --config=configs/joint_base.py --workdir=runs/joint_base

The tokenizer is nearly byte-level (the 256 bytes, 4 special tokens and 60 BPE merges), so a
model this small learns strong dependencies between neighbouring tokens (spelling) quickly:
the joint distribution of several masked tokens then differs clearly from the product of their
marginals, which is what a joint-sampling head exists to fix.
"""

from dlm.config import base_config


def get_config():
  config = base_config()
  config.data.dataset = "tfds:python_stdlib/docs"
  config.data.seq_len = 64
  config.data.tokenizer.update(vocab_size=320, num_reserved_pads=0)
  config.model.update(family="masked", width=128, depth=4, heads=2, time_conditioning="none",
                      head_init_std=128**-0.5)
  config.diffusion.schedule = "linear"
  config.train.update(steps=2000, batch_size=64, lr=2e-3, b2=0.95, warmup_steps=50,
                      ema_decay=0.999, log_every=100, eval_every=1000, checkpoint_every=500,
                      eval_batches=20)
  return config
