"""Code summarisation (stdlib function source -> first sentence of its docstring), any family.

  python train.py --config=configs/summarize.py:masked --workdir=runs/sum_masked
  python train.py --config=configs/summarize.py:autoregressive --workdir=runs/sum_ar
  python train.py --config=configs/summarize.py:continuous --workdir=runs/sum_continuous
  python train.py --config=configs/summarize.py:neodiff --workdir=runs/sum_neodiff
  python sample.py --workdir=runs/sum_masked --source="$(python -c 'import inspect, json; ...')"

Pairs from `python_stdlib/summarize` (split by file like the corpus): each row is
`[bos] source [eos] target [eos]...`; the source (up to 96 tokens) is given, clean at time 0,
and never scored; only the target is noised and predicted (eos-padded to the row's end).
Quickstart-size backbones (4 layers, width 128, 2048-token BPE). `bench/summarize_table.py`
trains all four and reports BLEU (sacrebleu) at 10 and 20 steps.
"""

from dlm.config import base_config

FAMILIES = ("masked", "autoregressive", "continuous", "neodiff")


def get_config(family: str = "masked"):
  if family not in FAMILIES:
    raise ValueError(f"unknown family {family!r} for configs/summarize.py; one of {FAMILIES}")
  config = base_config()
  config.data.dataset = "tfds:python_stdlib/summarize"
  config.data.source_feature = "source"
  config.data.target_feature = "target"
  config.data.source_len = 96
  config.data.seq_len = 128
  config.data.tokenizer.vocab_size = 2048
  config.model.update(family=family, width=128, depth=4, heads=2, head_init_std=128**-0.5,
                      time_conditioning="none" if family == "masked" else "adaln_zero")
  config.continuous.update(embed_dim=64)
  config.neodiff.update(embed_dim=64)
  config.train.update(steps=800, batch_size=32, lr=2e-3, b2=0.95, warmup_steps=50,
                      log_every=50, eval_every=400, checkpoint_every=400, eval_batches=8)
  return config
