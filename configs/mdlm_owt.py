"""MDLM on OpenWebText, the published setting (Sahoo et al. 2024, arXiv 2406.07524, §4.1).

  python train.py --config=configs/mdlm_owt.py --workdir=runs/mdlm_owt \
      --config.data.dataset='text:/data/openwebtext/{split}/*.txt' \
      --config.data.tokenizer.path=/data/gpt2/tokenizer.json

GPT-2 BPE (`<|endoftext|>` is bos and eos; a [MASK] token is added), documents joined and cut
into rows of 1024 tokens, a 12-layer width-768 transformer without time conditioning,
log-linear schedule, batch 512, AdamW 3e-4 with 2500 warmup steps then constant, EMA 0.9999,
1M steps, bfloat16 compute with rematerialised layers. OpenWebText is not in the TFDS catalog:
point data.dataset at text or JSON-lines files (MDLM holds out the last 100k documents).
"""

from dlm.config import base_config


def get_config():
  config = base_config()
  config.data.update(dataset="text:/data/openwebtext/{split}/*.txt", seq_len=1024,
                     packing="concat")
  config.data.tokenizer.path = "/data/gpt2/tokenizer.json"
  config.model.update(family="masked", width=768, depth=12, heads=12, mlp_ratio=8 / 3,  # SwiGLU with 8d^2 parameters, as a 4d GELU MLP
                      time_conditioning="none", dropout=0.1, dtype="bfloat16", remat="dots",
                      scan_layers=True)
  config.diffusion.update(schedule="loglinear", eps=1e-3, antithetic=True)
  config.train.update(steps=1_000_000, batch_size=512, lr=3e-4, warmup_steps=2500,
                      lr_schedule="constant", b2=0.999, grad_clip=1.0, ema_decay=0.9999,
                      log_every=100, eval_every=10_000, checkpoint_every=10_000)
  return config
