"""Quickstart: a tiny masked diffusion model on the embedded stdlib prose corpus (CPU, minutes).

  python train.py --config=configs/quickstart.py --workdir=runs/quickstart

A 4-layer, width-128 masked diffusion model (MDLM/MD4 continuous-time NELBO, no time input as
in MDLM's default) with a 2048-token byte-level BPE, rows of 128 tokens, 800 steps of batch 32.
About six minutes on two CPU cores; prints the final validation bits per token (raw and EMA) and
the unigram entropy of the same tokens. `python -m dlm.data --config=configs/quickstart.py`
inspects its data.
"""

from dlm.config import base_config


def get_config():
  config = base_config()
  config.data.dataset = "tfds:python_stdlib/docs"
  config.data.seq_len = 128
  config.data.tokenizer.vocab_size = 2048
  config.model.update(family="masked", width=128, depth=4, heads=2, time_conditioning="none",
                      head_init_std=128**-0.5)  # a non-zero head shortens the early plateau
  config.diffusion.schedule = "linear"
  config.train.update(steps=800, batch_size=32, lr=2e-3, b2=0.95, warmup_steps=50,
                      log_every=50, eval_every=400, checkpoint_every=400, eval_batches=0)
  return config
