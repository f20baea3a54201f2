"""Cosmos (Meshchaninov et al. 2025, arXiv 2506.21170; code MeshchaninovViacheslav/cosmos at
7a34a3b): a compressing text autoencoder aligned to a frozen encoder, and diffusion in its
latent space.

Stage 1, `CosmosAutoencoder` (family `cosmos_ae`):
  h        the frozen encoder's last hidden states, standardised per channel with statistics of
           the training data (`normalize_encodings`), fitted when the run starts;
  compress N learned latent queries; each Perceiver layer lets the latents attend to
           [latents ; projected h] (token padding masked), then an MLP; RMSNorm, a projection to
           `latent_dim` -> z (batch, N, latent_dim);
  decompress  one learned query per position (plus positions) attends to [queries ; latents]
           per layer; RMSNorm -> hidden states -> token logits; the hidden states are also
           projected to the encoder's width for the alignment loss.
  loss     CE(logits, tokens) + MSE(aligned hidden states, h), both over real tokens, 1:1.
  training augmentations (none at evaluation), on the official "final" recipe: the first
           `mask_share` of the batch drops each token from the compressor's attention with
           probability `mask_p` (0.3); the rest mixes h' = delta h + sqrt(1 - delta^2) eps
           (delta 0.7); then element-wise latent dropout with p = 0.4, no rescaling.
           Targets (tokens and h) always come from the clean input.

Stage 2, `CosmosDiffusion` (family `cosmos`): the trained autoencoder (from
`cosmos.autoencoder_workdir`, frozen) gives latents of clean rows, standardised per (latent
position, channel) with statistics stored at the start of the run. VP diffusion with the tan-d
schedule (dlm/processes/gaussian.py), x0-prediction with unweighted MSE, self-conditioning
with probability 0.5; the network is a transformer over the N latents with U-Net long skips
(each first-half block's input, before its time and self-conditioning terms, added back to the
mirrored second-half block's input, last in first out: `LatentDenoiser`) and the time
embedding (sinusoidal, max period 10, MLP) and self-conditioning added to every layer's input.
Sampling (dlm/samplers/cosmos.py) runs the reverse SDE or DDIM and decodes with the
decompressor.

Two families share the `cosmos` config section (`CosmosConfig`): `cosmos_ae` (no samplers)
and `cosmos`, which adopts the autoencoder's settings from its workdir before it is built
(`resolve`), freezes the autoencoder and stores the latent statistics (`pretrained`).
"""

from __future__ import annotations

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dlm import config as config_lib
from dlm import registry
from dlm.errors import DlmError
from dlm.models import encoders, transformer
from dlm.models.family import self_conditioned
from dlm.models.layers import Frozen, RMSNorm, param, timestep_features
from dlm.models.transformer import Block, SwiGLU, TransformerConfig
from dlm.processes import gaussian

# What stage 2 adopts from the stage-1 workdir's config: the autoencoder's architecture.
AE_KEYS = ("encoder", "encoder_arch", "encoder_dtype", "num_latents", "latent_dim", "ae_width",
           "ae_depth", "ae_heads")


@dataclasses.dataclass(frozen=True)
class CosmosConfig:
  """Config section `cosmos`: stage 1 (`cosmos_ae`) trains the autoencoder, stage 2 (`cosmos`)
  the latent diffusion on a stage-1 workdir (`config.model` sizes its denoiser)."""

  encoder: str = ""  # HF encoder directory (config.json, model.safetensors); '' = all-MiniLM-L6-v2
  encoder_arch: str = ""  # filled at build: the encoder's config.json (checkpoints need no files)
  encoder_dtype: str = "float32"
  num_latents: int = 16  # N latent vectors per row (seq_len / N = the compression)
  latent_dim: int = 64  # channels per latent
  ae_width: int = 128  # compressor / decompressor width, depth and heads
  ae_depth: int = 2
  ae_heads: int = 2
  ce_weight: float = 1.0  # token cross-entropy
  align_weight: float = 1.0  # MSE of the decompressor's states to the encoder's (standardised)
  mask_share: float = 0.5  # augmentation: this share of the batch masks encoder states...
  mask_p: float = 0.3  # ... each token dropped from the compressor's attention with this p
  noise_delta: float = 0.7  # the other rows: h' = delta h + sqrt(1 - delta^2) eps
  latent_dropout: float = 0.4  # element-wise latent dropout (no rescale); 0 = off
  stats_rows: int = 256  # training rows for the encoder's and the latents' statistics
  autoencoder_workdir: str = ""  # stage 2: the stage-1 workdir (frozen, settings adopted)
  tan_d: float = 5.0  # stage 2: VP tan-d schedule shift d
  self_condition: float = 0.5  # stage 2: self-conditioning probability in training
  t_min: float = 0.05  # stage 2 sampling: the grid runs from t = 1 to t_min

  def __post_init__(self):
    if self.ae_width % self.ae_heads or (self.ae_width // self.ae_heads) % 2:
      raise DlmError(f"cosmos.ae_width={self.ae_width} must split into cosmos.ae_heads="
                     f"{self.ae_heads} heads of even size")
    for key in ("num_latents", "latent_dim", "ae_depth", "stats_rows"):
      if getattr(self, key) <= 0:
        raise DlmError(f"cosmos.{key} must be positive, got {getattr(self, key)}")
    for key in ("mask_share", "mask_p", "latent_dropout", "self_condition"):
      if not 0.0 <= getattr(self, key) <= 1.0:
        raise DlmError(f"cosmos.{key} must be in [0, 1], got {getattr(self, key)}")
    if not 0.0 < self.noise_delta <= 1.0 or not 0.0 <= self.t_min < 1.0:
      raise DlmError("need 0 < cosmos.noise_delta <= 1 and 0 <= cosmos.t_min < 1")


@dataclasses.dataclass(frozen=True)
class AutoencoderConfig:
  """What the autoencoder is built from: the vocabulary, the row length and the `cosmos`
  section's stage-1 keys (their defaults are CosmosConfig's; `width`, `depth`, `heads` are its
  `ae_*`)."""
  vocab_size: int
  seq_len: int
  num_latents: int = CosmosConfig.num_latents
  latent_dim: int = CosmosConfig.latent_dim
  width: int = CosmosConfig.ae_width
  depth: int = CosmosConfig.ae_depth
  heads: int = CosmosConfig.ae_heads
  encoder: str = CosmosConfig.encoder
  encoder_dtype: str = CosmosConfig.encoder_dtype
  ce_weight: float = CosmosConfig.ce_weight
  align_weight: float = CosmosConfig.align_weight
  mask_share: float = CosmosConfig.mask_share
  mask_p: float = CosmosConfig.mask_p
  noise_delta: float = CosmosConfig.noise_delta
  latent_dropout: float = CosmosConfig.latent_dropout
  stats_rows: int = CosmosConfig.stats_rows

  def block(self) -> TransformerConfig:
    return TransformerConfig(vocab_size=self.vocab_size, width=self.width, depth=self.depth,
                             heads=self.heads, time_conditioning="none")


class CrossBlock(nnx.Module):
  """Pre-norm Perceiver layer: queries attend to [queries ; memory], then a SwiGLU MLP."""

  def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs):
    d, h, k = cfg.width, cfg.heads, cfg.head_dim
    self.cfg = cfg
    self.norm_q, self.norm_kv = RMSNorm(d, rngs), RMSNorm(d, rngs)
    self.wq = param(rngs, nnx.initializers.normal(d**-0.5), (d, h, k), ("embed", "heads", "kv"))
    self.wkv = param(rngs, nnx.initializers.normal(d**-0.5), (d, 2, h, k),
                     ("embed", None, "heads", "kv"))
    self.wo = param(rngs, nnx.initializers.normal((h * k)**-0.5 / (2 * cfg.depth)**0.5),
                    (h, k, d), ("heads", "kv", "embed"))
    self.norm_mlp = RMSNorm(d, rngs)
    self.mlp = SwiGLU(cfg, rngs)

  def __call__(self, q, memory, memory_mask):
    """q (B, Q, d); memory (B, M, d) with memory_mask (B, M) bool -> (B, Q, d)."""
    hq = self.norm_q(q)
    kv_in = jnp.concatenate([hq, self.norm_kv(memory)], axis=1)
    keep = jnp.concatenate([jnp.ones(q.shape[:2], bool), memory_mask], axis=1)
    qh = jnp.einsum("bqd,dhk->bqhk", hq, self.wq[...])
    kv = jnp.einsum("bmd,dthk->bmthk", kv_in, self.wkv[...])
    o = jax.nn.dot_product_attention(qh, kv[:, :, 0], kv[:, :, 1],
                                     mask=keep[:, None, None, :])
    x = q + jnp.einsum("bqhk,hkd->bqd", o, self.wo[...])
    return x + self.mlp(self.norm_mlp(x))


class CosmosAutoencoder(nnx.Module):
  family = "cosmos_ae"

  def __init__(self, cfg: AutoencoderConfig, bert: encoders.BertConfig, rngs: nnx.Rngs):
    encoders.check_alignment(bert, cfg.vocab_size, cfg.seq_len, "Cosmos")
    self.cfg = cfg
    d, hidden = cfg.width, bert.hidden_size
    block = cfg.block()
    normal = nnx.initializers.normal(0.02)
    self.encoder = encoders.BertEncoder(bert, dtype=cfg.encoder_dtype)
    self.enc_mean = Frozen(jnp.zeros((hidden,), jnp.float32))
    self.enc_std = Frozen(jnp.ones((hidden,), jnp.float32))
    self.latent_queries = param(rngs, normal, (cfg.num_latents, d), (None, "embed"))
    self.token_in = param(rngs, nnx.initializers.normal(hidden**-0.5), (hidden, d),
                          (None, "embed"))
    self.token_pos = param(rngs, normal, (cfg.seq_len, d), (None, "embed"))
    self.compressor = nnx.List([CrossBlock(block, rngs) for _ in range(cfg.depth)])
    self.norm_latent = RMSNorm(d, rngs)
    self.to_latent = param(rngs, nnx.initializers.normal(d**-0.5), (d, cfg.latent_dim),
                           ("embed", None))
    self.from_latent = param(rngs, nnx.initializers.normal(cfg.latent_dim**-0.5),
                             (cfg.latent_dim, d), (None, "embed"))
    self.query = param(rngs, normal, (d,), ("embed",))
    self.query_pos = param(rngs, normal, (cfg.seq_len, d), (None, "embed"))
    self.decompressor = nnx.List([CrossBlock(block, rngs) for _ in range(cfg.depth)])
    self.norm_out = RMSNorm(d, rngs)
    self.lm_head = param(rngs, nnx.initializers.normal(d**-0.5), (d, cfg.vocab_size),
                         ("embed", "vocab"))
    self.align = param(rngs, nnx.initializers.normal(d**-0.5), (d, hidden), ("embed", None))

  # The frozen encoder's targets ---------------------------------------------------------------

  def encodings(self, tokens, real):
    """The encoder's last hidden states, standardised per channel (batch, length, hidden)."""
    h = self.encoder(tokens, real.astype(jnp.int32))
    return jax.lax.stop_gradient((h - self.enc_mean[...]) / self.enc_std[...])

  # Compress and decompress --------------------------------------------------------------------

  def compress(self, h, keep):
    """h (B, L, hidden) standardised encodings, keep (B, L) bool -> z (B, N, latent_dim)."""
    chex.assert_rank(h, 3)
    b, length = h.shape[:2]
    tokens = h @ self.token_in[...] + self.token_pos[None, :length]
    x = jnp.broadcast_to(self.latent_queries[...], (b,) + self.latent_queries.shape)
    for layer in self.compressor:
      x = layer(x, tokens, keep)
    return self.norm_latent(x) @ self.to_latent[...]

  def decompress(self, z, length: int):
    """z (B, N, latent_dim) -> (token logits (B, L, V), last hidden states (B, L, width))."""
    b = z.shape[0]
    memory = z @ self.from_latent[...]
    x = jnp.broadcast_to(self.query[...] + self.query_pos[:length], (b, length, self.cfg.width))
    keep = jnp.ones(memory.shape[:2], bool)
    for layer in self.decompressor:
      x = layer(x, memory, keep)
    hidden = self.norm_out(x)
    return (hidden @ self.lm_head[...]).astype(jnp.float32), hidden

  def latents(self, tokens, segment_ids):
    """Clean latents of token rows (no augmentation)."""
    real = segment_ids > 0
    return self.compress(self.encodings(tokens, real), real)

  # Training -----------------------------------------------------------------------------------

  def corrupt(self, batch, rng):
    """The augmentations' randomness, drawn for the whole batch (exact accumulation)."""
    x = batch["tokens"]
    b = x.shape[0]
    k = jax.random.split(rng, 4)
    masked_rows = jnp.arange(b) < int(round(self.cfg.mask_share * b))
    return {**batch,
            "aug_masked_rows": masked_rows,
            "aug_drop": jax.random.uniform(k[0], x.shape) < self.cfg.mask_p,
            "aug_noise": jax.random.normal(k[1], x.shape + (self.encoder.config.hidden_size,)),
            "aug_latent_keep": jax.random.uniform(
                k[2], (b, self.cfg.num_latents, self.cfg.latent_dim)) >= self.cfg.latent_dropout}

  def loss(self, noisy, *, rng=None, train: bool = True):
    del rng
    x = noisy["tokens"]
    real = noisy["segment_ids"] > 0
    h = self.encodings(x, real)
    keep = real
    h_in = h
    if train:
      rows = noisy["aug_masked_rows"][:, None]
      keep = jnp.where(rows, real & ~noisy["aug_drop"], real)
      delta = self.cfg.noise_delta
      noised = delta * h + math.sqrt(1.0 - delta**2) * noisy["aug_noise"]
      h_in = jnp.where(rows[..., None], h, noised)
    z = self.compress(h_in, keep)
    if train:
      z = jnp.where(noisy["aug_latent_keep"], z, 0.0)
    logits, hidden = self.decompress(z, x.shape[1])
    log_p = jax.nn.log_softmax(logits, axis=-1)
    ce = -jnp.take_along_axis(log_p, x[..., None], -1)[..., 0]
    mse = jnp.square(hidden @ self.align[...] - h).mean(-1)
    ce, mse = jnp.where(real, ce, 0.0), jnp.where(real, mse, 0.0)
    correct = jnp.where(real, jnp.argmax(logits, -1) == x, False)
    total = self.cfg.ce_weight * ce.sum() + self.cfg.align_weight * mse.sum()
    return total, {"loss": total, "ce": ce.sum(), "mse": mse.sum(), "accuracy": correct.sum(),
                   "tokens": real.sum()}


class LatentDenoiser(nnx.Module):
  """Cosmos' score network (official `architecture/score_estimator.py`, as TEncDM's): blocks
  over the latents with U-Net long skips; every block's input gets Linear(SiLU(time
  embedding)) and Linear(x0_prev) added; RMSNorm -> x0.

  Skips: each first-half block pushes its *input* (before its time and self-conditioning
  terms); each second-half block adds the popped skip (last in, first out), then those terms,
  then runs. So the embedded noisy latent reaches the last block. With an odd depth the middle
  block has no skip. Until this was fixed the outputs were stored (off by one); the parameters
  are unchanged, so older checkpoints load with the same shapes but were trained with the old
  wiring and should be retrained."""

  def __init__(self, cfg: TransformerConfig, latent_dim: int, num_latents: int, rngs: nnx.Rngs):
    d = cfg.width
    self.cfg = cfg
    normal = nnx.initializers.normal(0.02)
    self.z_in = param(rngs, nnx.initializers.normal(latent_dim**-0.5), (latent_dim, d),
                      (None, "embed"))
    self.pos = param(rngs, normal, (num_latents, d), (None, "embed"))
    self.time_in = param(rngs, nnx.initializers.normal(0.02), (256, 2 * d), ("freq", "mlp"))
    self.time_out = param(rngs, nnx.initializers.normal((2 * d)**-0.5), (2 * d, d),
                          ("mlp", "embed"))
    self.blocks = nnx.List([Block(cfg, rngs) for _ in range(cfg.depth)])
    self.time_proj = param(rngs, nnx.initializers.zeros, (cfg.depth, d, d), (None, "embed", None))
    self.sc_proj = param(rngs, nnx.initializers.zeros, (cfg.depth, latent_dim, d),
                         (None, None, "embed"))
    self.norm_out = RMSNorm(d, rngs)
    self.out = param(rngs, nnx.initializers.zeros, (d, latent_dim), ("embed", None))

  def __call__(self, z_t, t, x0_prev):
    """z_t, x0_prev (B, N, latent_dim), t (B,) -> x0 estimate (B, N, latent_dim)."""
    b, n = z_t.shape[:2]
    emb = timestep_features(t, 256, max_period=10.0, scale=1.0) @ self.time_in[...]
    emb = jax.nn.silu(emb) @ self.time_out[...]  # (B, d)
    x = z_t @ self.z_in[...] + self.pos[None, :n]
    mask = jnp.ones((b, 1, n, n), bool)
    positions = jnp.broadcast_to(jnp.arange(n), (b, n))
    half = self.cfg.depth // 2
    skips = []
    for i, block in enumerate(self.blocks):
      if i < half:
        skips.append(x)  # the block's input, before its time and self-conditioning terms
      elif i >= self.cfg.depth - half:
        x = x + skips.pop()
      x = x + (jax.nn.silu(emb) @ self.time_proj[i])[:, None] + x0_prev @ self.sc_proj[i]
      x = block(x, None, mask, positions, None)
    return self.norm_out(x) @ self.out[...]


class CosmosDiffusion(nnx.Module):
  family = "cosmos"

  def __init__(self, ae_cfg: AutoencoderConfig, bert: encoders.BertConfig,
               net_cfg: TransformerConfig, schedule: gaussian.GaussianSchedule,
               self_condition: float, t_min: float, rngs: nnx.Rngs):
    self.autoencoder = CosmosAutoencoder(ae_cfg, bert, rngs)
    n, k = ae_cfg.num_latents, ae_cfg.latent_dim
    self.latent_mean = Frozen(jnp.zeros((n, k), jnp.float32))
    self.latent_std = Frozen(jnp.ones((n, k), jnp.float32))
    self.net = LatentDenoiser(net_cfg, k, n, rngs)
    self.schedule = schedule
    self.self_condition = self_condition
    self.t_min = t_min

  def normalize(self, z):
    return (z - self.latent_mean[...]) / self.latent_std[...]

  def denormalize(self, z):
    return z * self.latent_std[...] + self.latent_mean[...]

  def denoise(self, z_t, t, x0_prev):
    """x0 estimate (B, N, latent_dim) of standardised latents z_t at time t (B,), given the
    previous estimate (zeros at the first step)."""
    return self.net(z_t, t, x0_prev)

  def decode(self, z_norm, length: int):
    """Standardised latents -> token logits (B, L, V)."""
    return self.autoencoder.decompress(self.denormalize(z_norm), length)[0]

  def corrupt(self, batch, rng):
    z0 = jax.lax.stop_gradient(self.normalize(
        self.autoencoder.latents(batch["tokens"], batch["segment_ids"])))
    k = jax.random.split(rng, 3)
    b, n = z0.shape[:2]
    t = jax.random.uniform(k[0], (b,), minval=1e-5, maxval=1.0)
    z_t = gaussian.forward_sample(k[1], z0, jnp.broadcast_to(t[:, None], (b, n)), self.schedule)
    use_sc = jax.random.uniform(k[2], (b,)) < self.self_condition
    return {"z0": z0, "z_t": z_t, "t": t, "self_cond": use_sc,
            "segment_ids": batch["segment_ids"]}

  def loss(self, noisy, *, rng=None, train: bool = True):
    del rng
    z0, z_t, t = noisy["z0"], noisy["z_t"], noisy["t"]
    zeros = jnp.zeros_like(z0)
    x0_hat = lambda x0_prev: self.denoise(z_t, t, x0_prev)  # noqa: E731
    if train:  # per row: drawn in `corrupt`, so accumulation stays exact
      x0_hat = self_conditioned(x0_hat, x0_hat, zeros, noisy["self_cond"])
    else:
      x0_hat = x0_hat(zeros)
    mse = gaussian.x0_mse(x0_hat, z0, mean_over_dim=True)
    real_rows = (noisy["segment_ids"] > 0).any(-1)
    mse = jnp.where(real_rows[:, None], mse, 0.0)
    count = real_rows.sum() * z0.shape[1]
    return mse.sum(), {"loss": mse.sum(), "mse": mse.sum(), "tokens": count}


def latent_statistics(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and std per (latent position, channel) of latents (rows, N, latent_dim)."""
  z = np.asarray(z, np.float64)
  return z.mean(0).astype(np.float32), np.maximum(z.std(0), 1e-6).astype(np.float32)


def _ae_config(config, tokenizer) -> AutoencoderConfig:
  options = config_lib.options(CosmosConfig, config.cosmos)
  return AutoencoderConfig(
      vocab_size=tokenizer.vocab_size, seq_len=config.data.seq_len,
      num_latents=options.num_latents, latent_dim=options.latent_dim, width=options.ae_width,
      depth=options.ae_depth, heads=options.ae_heads, encoder=options.encoder,
      encoder_dtype=options.encoder_dtype, ce_weight=options.ce_weight,
      align_weight=options.align_weight, mask_share=options.mask_share, mask_p=options.mask_p,
      noise_delta=options.noise_delta, latent_dropout=options.latent_dropout,
      stats_rows=options.stats_rows)


def build_autoencoder(config, tokenizer, rngs: nnx.Rngs) -> CosmosAutoencoder:
  bert = encoders.recorded_config(config.cosmos)
  return CosmosAutoencoder(_ae_config(config, tokenizer), bert, rngs)


def build_diffusion(config, tokenizer, rngs: nnx.Rngs) -> CosmosDiffusion:
  bert = encoders.recorded_config(config.cosmos)
  options = config_lib.options(CosmosConfig, config.cosmos)
  net = transformer.for_tokenizer(config, tokenizer, time_conditioning="none")
  return CosmosDiffusion(_ae_config(config, tokenizer), bert, net,
                         gaussian.GaussianSchedule("tan_d", d=options.tan_d),
                         options.self_condition,
                         options.t_min, rngs)


def _encoder_statistics(encoder, rows) -> dict:
  """The encoder's last hidden states' mean and std per channel over the real tokens of rows."""
  h = encoders.token_states(encoder, rows)
  return {"enc_mean": h.mean(0).astype(np.float32),
          "enc_std": np.maximum(h.std(0), 1e-6).astype(np.float32)}


def pretrained_autoencoder(model: CosmosAutoencoder, config, tokenizer, sources) -> dict:
  """The encoder's weights and its per-channel statistics on training rows."""
  del config, tokenizer
  encoder = encoders.load_matching(model.cfg.encoder, model.cfg.encoder_dtype,
                                   model.encoder.config)
  rows = sources.rows(model.cfg.stats_rows, "the Cosmos encoder statistics")
  return {"encoder": nnx.to_pure_dict(nnx.state(encoder)), **_encoder_statistics(encoder, rows)}


def pretrained_diffusion(model: CosmosDiffusion, config, tokenizer, sources) -> dict:
  """The trained autoencoder (frozen) and its latents' statistics per (position, channel)."""
  workdir = config.cosmos.autoencoder_workdir
  if not workdir:
    raise DlmError("cosmos.autoencoder_workdir must name the stage-1 workdir")
  _, ae_tok, ae, _ = sources.restore(workdir, "ema")
  if ae_tok.fingerprint != tokenizer.fingerprint:
    raise DlmError(f"the autoencoder in {workdir!r} uses another tokenizer")
  graphdef, weights = nnx.split(ae)
  run = jax.jit(lambda w, ids, seg: nnx.merge(graphdef, w).latents(ids, seg))
  z = np.concatenate([np.asarray(run(weights, r["tokens"], r["segment_ids"]))
                      for r in sources.rows(model.autoencoder.cfg.stats_rows,
                                            "the Cosmos latent statistics")])
  mean, std = latent_statistics(z)
  return {"autoencoder": jax.device_get(nnx.to_pure_dict(weights)),
          "latent_mean": mean, "latent_std": std}


def adopt_autoencoder(config, read_config) -> None:
  """Stage 2 copies the stage-1 run's autoencoder settings (its stored config) into this
  config, so that the two always agree and the checkpoint records them."""
  workdir = config.cosmos.autoencoder_workdir
  if not workdir:
    return  # `pretrained_diffusion` names the missing workdir
  ae_config = read_config(workdir)
  if ae_config.model.family != "cosmos_ae":
    raise DlmError(f"cosmos.autoencoder_workdir {workdir!r} holds a "
                   f"{ae_config.model.family!r} model, not a cosmos_ae autoencoder")
  if ae_config.data.seq_len != config.data.seq_len:
    raise DlmError(f"data.seq_len {config.data.seq_len} differs from the autoencoder's "
                   f"{ae_config.data.seq_len}")
  config_lib.adopt(config, ae_config, [f"cosmos.{key}" for key in AE_KEYS])


AUTOENCODER = registry.Family("cosmos_ae", build_autoencoder, sections={"cosmos": CosmosConfig},
                              pretrained=pretrained_autoencoder, generates_text=False)
DIFFUSION = registry.Family("cosmos", build_diffusion, sections={"cosmos": CosmosConfig},
                            resolve=adopt_autoencoder, pretrained=pretrained_diffusion,
                            frozen_prefixes=("autoencoder", "latent_mean", "latent_std"))
