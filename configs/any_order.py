"""Any-subset autoregressive model (AS-ARM, arXiv 2504.20456) on the stdlib prose corpus (CPU).

  python train.py --config=configs/any_order.py --workdir=runs/any_order

The quickstart's data and backbone (4 layers, width 128, 2048-token BPE, rows of 128 tokens)
as an AS-ARM: two attention streams (content and query) over one 2L-token sequence, each row
masked at a rate in [0.85, 0.99], targets predicted left to right, plain cross-entropy. Sample
with `python sample.py --workdir=runs/any_order` (ASSD, k = 5; `--sampler=sequential` for one
token per pass); `python bench/speculative.py --workdir=runs/any_order` compares the two.
"""

from dlm.config import base_config


def get_config():
  config = base_config()
  config.data.dataset = "tfds:python_stdlib/docs"
  config.data.seq_len = 128
  config.data.tokenizer.vocab_size = 2048
  config.model.update(family="any_order", width=128, depth=4, heads=2, time_conditioning="none",
                      head_init_std=128**-0.5)
  config.any_order.update(min_rate=0.85, max_rate=0.99, order="left_to_right")
  config.train.update(steps=600, batch_size=32, lr=2e-3, b2=0.95, warmup_steps=50,
                      log_every=50, eval_every=300, checkpoint_every=300, eval_batches=8)
  return config
