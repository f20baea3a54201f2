"""The base model of the ADJUST bench (bench/joint_sampling.py): a small masked diffusion model
on 32-token rows of the embedded stdlib prose, the frozen model a joint-sampling head is trained
on (configs/joint_head.py).

  python train.py --config=configs/joint_base.py --workdir=runs/joint_base
"""

from dlm.config import base_config


def get_config():
  config = base_config()
  config.data.dataset = "tfds:python_stdlib/docs"
  config.data.seq_len = 32
  config.data.tokenizer.vocab_size = 2048
  config.model.update(family="masked", width=128, depth=4, heads=2, time_conditioning="none",
                      head_init_std=128**-0.5)
  config.diffusion.schedule = "linear"
  config.train.update(steps=1500, batch_size=64, lr=2e-3, b2=0.95, warmup_steps=50,
                      ema_decay=0.999, log_every=100, eval_every=1500, checkpoint_every=500,
                      eval_batches=20)
  return config
