"""NeoDiff non-simultaneous diffusion (Li, Gao, Xu, ACL 2025) at quickstart size (CPU).

  python train.py --config=configs/neodiff.py --workdir=runs/neodiff
  python sample.py --workdir=runs/neodiff --steps=20

The quickstart's data and backbone (4 layers, width 128, 2048-token BPE, rows of 128 tokens),
conditioned on each token's own intrinsic time; 64-dimensional embeddings, Poisson intrinsic
times with tau_max = 99, the sqrt schedule, training noise scale 6.5, self-conditioning 0.5,
and the one-layer time predictor. For the code-summarisation pairs (the paper evaluates
conditional generation) use configs/summarize.py:neodiff.
"""

from dlm.config import base_config


def get_config():
  config = base_config()
  config.data.dataset = "tfds:python_stdlib/docs"
  config.data.seq_len = 128
  config.data.tokenizer.vocab_size = 2048
  config.model.update(family="neodiff", width=128, depth=4, heads=2,
                      time_conditioning="adaln_zero", head_init_std=128**-0.5)
  config.neodiff.update(embed_dim=64, num_tau=100, train_noise_scale=6.5)
  config.train.update(steps=800, batch_size=32, lr=2e-3, b2=0.95, warmup_steps=50,
                      log_every=50, eval_every=400, checkpoint_every=400, eval_batches=8)
  return config
