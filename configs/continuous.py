"""Continuous diffusion over token embeddings (CDCD/Plaid style) at quickstart size (CPU).

  python train.py --config=configs/continuous.py --workdir=runs/continuous
  python sample.py --workdir=runs/continuous --sampler=ddpm --steps=100

The quickstart's data and backbone (4 layers, width 128, 2048-token BPE, rows of 128 tokens),
time-conditioned (adaLN) on each token's time; 64-dimensional normalised token embeddings,
cosine VP schedule, x_0 logits trained with cross-entropy, self-conditioning with probability
0.5. For the code-summarisation pairs use configs/summarize.py:continuous.
"""

from dlm.config import base_config


def get_config():
  config = base_config()
  config.data.dataset = "tfds:python_stdlib/docs"
  config.data.seq_len = 128
  config.data.tokenizer.vocab_size = 2048
  config.model.update(family="continuous", width=128, depth=4, heads=2,
                      time_conditioning="adaln_zero", head_init_std=128**-0.5)
  config.continuous.update(embed_dim=64, schedule="cosine", self_condition=0.5)
  config.train.update(steps=800, batch_size=32, lr=2e-3, b2=0.95, warmup_steps=50,
                      log_every=50, eval_every=400, checkpoint_every=400, eval_batches=8)
  return config
