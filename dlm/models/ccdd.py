"""CCDD: coevolutionary continuous-discrete diffusion (Zhou et al. 2025, arXiv 2510.03206; code
zhouc20/CCDD `ccdd/diffusion_process.py`, `loss.py`, `models/dit.py::MDIT`).

One network denoises a joint state (x_t, z_t):
  x_t  tokens under GIDD noise (dlm/processes/gidd.py; p_u = 0 is MDLM's masking), time t;
  z_t  the frozen encoder's contextual hidden states of the clean sequence, standardised per
       token (layer norm without affine), reduced to `latent_dim` channels (the first ones, or
       a PCA fitted on training rows), VP-noised: z_t = sqrt(1 - t) z0 + sqrt(t) eps
       (`vp_linear`), at the same t by default or an independent one (`async_time`).
Before noising, z0 is zeroed at masked tokens with probability p_r ~ U[p_r_min, p_r_max] per
batch (representation masking); in training whole samples drop z_t (zeros) or x_t (all
[MASK]) so that guidance works.

Network (MDIT): token embedding + an adaLN-modulated linear projection of z_t, adaLN-zero time
conditioning (token time t, plus an embedding of the z time), two heads: token logits ([MASK]
never predicted) and z0 prediction (its own adaLN final layer on the backbone's trunk,
`CCDDNet`: the shared backbone plus that head, whose parameters keep the names `net/aux_*`).

Loss: the GIDD NELBO of the tokens + min(1/(1 - t), 10) mean_d (z_pred - z0)^2 (the z term as
CCDD `loss.py`). The reported `nelbo` is the token term only: a bound on -log p(x | z-channel),
not on -log p(x), since z0 is a function of the clean tokens (see README).

Where the defaults depart from the released code: it trains the token channel on its
`dynamic` weighting (2 on masked tokens, 1 on uniform-noised ones, B/V exp(gamma/2 sigmoid(-t))
on clean ones, clipped to [0, 2]; `loss.py::get_weights`) and only logs the NELBO, where we
train on the NELBO itself by default (`loss_weighting='dynamic'` is the released weighting,
`GiddProcess.dynamic_weight`; its loss also clips the importance term at 10, which we do not);
it slices the encoder's states to
`latent_dim` channels and then standardises them (`reduce='slice_first'`), where the default
standardises the full width and then slices; rows whose z is dropped get no z loss there
(`z_loss_when_dropped=False`), and do by default; and the paper's encoder is the causal
Qwen3-Embedding, ours by default the bidirectional all-MiniLM-L6-v2, whose states reveal more of
each token's right context (so more of x leaks through z). The defaults stay as they are so
that the README's CCDD table still describes them.
"""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dlm import config as config_lib
from dlm import registry
from dlm.errors import DlmError
from dlm.models import encoders, masked, transformer
from dlm.models.family import given_mask, scored_mask
from dlm.models.layers import Frozen, param, timestep_features
from dlm.models.transformer import Transformer, TransformerConfig
from dlm.processes import gaussian
from dlm.processes.categorical import zero_masking
from dlm.processes import time as time_lib
from dlm.processes import gidd
from dlm.processes.gidd import GiddProcess

REDUCTIONS = ("slice", "slice_first", "pca")
WEIGHTINGS = ("elbo", "dynamic")


@dataclasses.dataclass(frozen=True)
class CCDDConfig:
  """Config section `ccdd`; the token channel also reads `diffusion` (schedule, eps,
  antithetic)."""

  encoder: str = ""  # HF encoder directory (config.json, model.safetensors); '' = all-MiniLM-L6-v2
  encoder_arch: str = ""  # filled at build: the encoder's config.json (checkpoints need no files)
  encoder_dtype: str = "float32"  # the frozen encoder's matmul dtype
  latent_dim: int = 32  # channels of z
  # 'slice': standardise the full width, keep the first latent_dim channels; 'slice_first': keep
  # them, then standardise (the released code: z0 = LN(h[..., :latent_dim])); 'pca' (fitted)
  reduce: str = "slice"
  pca_rows: int = 256  # training rows the PCA is fitted on
  p_uniform: float = 0.0  # GIDD uniform-noise share (0 = MDLM masking)
  gamma: float = 1.0  # GIDD: c_t = B (t (1 - t))^(gamma / 2), valid for 0 < gamma <= 2
  async_time: bool = False  # z at its own uniform time instead of the tokens' t
  p_r_min: float = 0.0  # representation masking: p_r ~ U[p_r_min, p_r_max] per batch zeroes z0
  p_r_max: float = 1.0  # at masked tokens before noising (CCDD's released configs: U[0, 1])
  p_drop_z: float = 0.1  # whole-sample dropout of z_t in training (for guidance)
  p_drop_x: float = 0.0  # whole-sample dropout of x_t (all [MASK]) in training
  z_weight: float = 1.0  # weight of the z MSE beside the token NELBO
  z_weight_max: float = 10.0  # the MSE's time weight min(1 / (1 - t), z_weight_max)
  # whether rows whose z_t is dropped (p_drop_z) still train the z0 prediction (the released
  # code: no, False)
  z_loss_when_dropped: bool = True
  # what trains the token channel: 'elbo' (the GIDD NELBO) or 'dynamic' (the released code's
  # weighting, GiddProcess.dynamic_weight); the reported nelbo is the bound either way
  loss_weighting: str = "elbo"
  # evaluation only: z_t zeroed, so the bound is the token channel's without what z reveals of
  # the clean sequence (bench/ccdd_leakage.py sets it to measure that)
  eval_without_z: bool = False

  def __post_init__(self):
    if self.reduce not in REDUCTIONS:
      raise DlmError(f"unknown ccdd.reduce {self.reduce!r}; expected one of {REDUCTIONS}")
    if self.loss_weighting not in WEIGHTINGS:
      raise DlmError(f"unknown ccdd.loss_weighting {self.loss_weighting!r}; expected one of "
                     f"{WEIGHTINGS}")
    if not isinstance(self.latent_dim, int) or self.latent_dim <= 0:
      raise DlmError(f"ccdd.latent_dim must be a positive integer, got {self.latent_dim!r}")
    gidd.check_parameters(self.p_uniform, self.gamma)
    if not 0.0 <= self.p_r_min <= self.p_r_max <= 1.0:
      raise DlmError("need 0 <= ccdd.p_r_min <= ccdd.p_r_max <= 1")
    for name in ("p_drop_z", "p_drop_x"):
      if not 0.0 <= getattr(self, name) < 1.0:
        raise DlmError(f"ccdd.{name} must be in [0, 1)")


def standardize(h: jax.Array, eps: float = 1e-5) -> jax.Array:
  """Layer norm over the hidden dimension without affine parameters (CCDD's `LN(h)`)."""
  mean = h.mean(-1, keepdims=True)
  var = jnp.square(h - mean).mean(-1, keepdims=True)
  return (h - mean) * jax.lax.rsqrt(var + eps)


class CCDDNet(Transformer):
  """The shared backbone plus CCDD's z0 head: its own adaLN final layer on the trunk's states
  (MDIT's second `DDitFinalLayer`)."""

  def __init__(self, cfg: TransformerConfig, latent_dim: int, rngs: nnx.Rngs):
    super().__init__(cfg, rngs)
    d = cfg.width
    self.aux_modulation = param(rngs, nnx.initializers.zeros, (cfg.cond_width, 2, d),
                                ("cond", None, "embed"))
    self.aux_out = param(rngs, nnx.initializers.zeros, (d, latent_dim), ("embed", None))
    self.aux_bias = param(rngs, nnx.initializers.zeros, (latent_dim,), (None,))

  def both(self, x, t, segment_ids=None, positions=None, *, rng=None, cond=None):
    """(token logits, z0 prediction) from input vectors x (batch, length, width)."""
    h, c = self.trunk(x, t, segment_ids, positions, rng=rng, cond=cond)
    dt = jnp.dtype(self.cfg.dtype)
    mod = jnp.einsum("blc,cnd->blnd", jax.nn.silu(c), self.aux_modulation[...].astype(dt))
    h_z = h * (1 + mod[:, :, 1]) + mod[:, :, 0]
    z_pred = (h_z @ self.aux_out[...].astype(dt)).astype(jnp.float32) + self.aux_bias[...]
    return self.head(self.modulate(h, c)), z_pred


class CCDD(nnx.Module):
  family = "ccdd"

  def __init__(self, net_cfg: TransformerConfig, process: GiddProcess, options: CCDDConfig,
               bert: encoders.BertConfig, rngs: nnx.Rngs):
    encoders.check_alignment(bert, net_cfg.vocab_size, None, "CCDD")
    if options.latent_dim > bert.hidden_size:
      raise DlmError(f"ccdd.latent_dim {options.latent_dim} exceeds the encoder width "
                     f"{bert.hidden_size}")
    if not net_cfg.conditioned:
      raise DlmError("CCDD is time-conditioned: model.time_conditioning must be 'adaln_zero'")
    self.options, self.process = options, process
    self.encoder = encoders.BertEncoder(bert, dtype=options.encoder_dtype)
    if options.reduce == "pca":
      self.pca_mean = Frozen(jnp.zeros((bert.hidden_size,), jnp.float32))
      self.pca_proj = Frozen(jnp.zeros((bert.hidden_size, options.latent_dim), jnp.float32))
    w, k, cw = net_cfg.width, options.latent_dim, net_cfg.cond_width
    self.embed = param(rngs, nnx.initializers.normal(0.02), (net_cfg.vocab_size, w),
                       ("vocab", "embed"))
    self.z_modulation = param(rngs, nnx.initializers.zeros, (cw, 2, k), ("cond", None, None))
    self.z_in = param(rngs, nnx.initializers.normal(k**-0.5), (k, w), (None, "embed"))
    self.time_z_in = param(rngs, nnx.initializers.normal(0.02), (256, cw), ("freq", "cond"))
    self.time_z_hidden = param(rngs, nnx.initializers.normal(0.02), (cw, cw), ("cond_in", "cond"))
    self.net = CCDDNet(dataclasses.replace(net_cfg, token_inputs=False), k, rngs)
    self.schedule = gaussian.GaussianSchedule("linear")  # vp_linear: alpha_bar = 1 - t

  # The continuous channel --------------------------------------------------------------------

  def latents(self, tokens, segment_ids):
    """z0 (batch, length, latent_dim): the frozen encoder's standardised, reduced states."""
    h = self.encoder(tokens, (segment_ids > 0).astype(jnp.int32))
    if self.options.reduce == "slice_first":
      z0 = standardize(h[..., :self.options.latent_dim])
    elif self.options.reduce == "pca":
      z0 = (standardize(h) - self.pca_mean[...]) @ self.pca_proj[...]
    else:
      z0 = standardize(h)[..., :self.options.latent_dim]
    return jax.lax.stop_gradient(z0)

  # The network -------------------------------------------------------------------------------

  def _time_z(self, t_z):
    h = timestep_features(t_z, 256) @ self.time_z_in[...]
    return jax.nn.silu(h) @ self.time_z_hidden[...]

  def denoise(self, x_t, z_t, t, t_z, segment_ids=None, positions=None, *, rng=None):
    """(token logits (batch, length, V) with [MASK] at -inf, z0 prediction) at noisy tokens x_t
    and representations z_t, with the tokens' time t and z's time t_z (batch, length)."""
    chex.assert_rank(z_t, 3)
    chex.assert_equal_shape((x_t, t, t_z))
    c_z = self._time_z(t_z)
    c = self.net.time_embedding(t) + c_z
    mod = jnp.einsum("blc,cnk->blnk", jax.nn.silu(c), self.z_modulation[...])
    z_in = (z_t * (1.0 + mod[:, :, 1]) + mod[:, :, 0]) @ self.z_in[...]
    x = jnp.take(self.embed[...], x_t, axis=0) + z_in
    logits, z_pred = self.net.both(x, t, segment_ids, positions, rng=rng, cond=c_z)
    return zero_masking(logits, self.process.mask_id), z_pred

  # Training ----------------------------------------------------------------------------------

  def corrupt(self, batch, rng):
    x, seg = batch["tokens"], batch["segment_ids"]
    given = given_mask(batch)
    scored = scored_mask(batch)
    keys = jax.random.split(rng, 8)
    b = x.shape[0]
    t_seq = self.process.sample_time(keys[0], b)
    t_z_seq = (time_lib.sample_times(keys[1], b, antithetic=False)
               if self.options.async_time else t_seq)
    t = jnp.where(given, 0.0, t_seq[:, None])
    t_z = jnp.broadcast_to(t_z_seq[:, None], x.shape)
    z_tok = self.process.forward_sample(keys[2], x, t, scored)
    drop_x = jax.random.uniform(keys[3], (b,)) < self.options.p_drop_x
    z0 = self.latents(x, seg)
    p_r = jax.random.uniform(keys[4], (), minval=self.options.p_r_min,
                             maxval=self.options.p_r_max)
    hide = (z_tok == self.process.mask_id) & (jax.random.uniform(keys[5], x.shape) < p_r)
    z0_in = jnp.where(hide[..., None], 0.0, z0)
    z_t = gaussian.forward_sample(keys[6], z0_in, t_z, self.schedule)
    drop_z = jax.random.uniform(keys[7], (b,)) < self.options.p_drop_z
    return {**batch, "z": z_tok, "t": t, "t_z": t_z, "z_t": z_t, "z0": z0,
            "scored": scored, "drop_x": drop_x, "drop_z": drop_z}

  def loss(self, noisy, *, rng=None, train: bool = True):
    """Whole-sample dropout of x_t or z_t applies in training only: the evaluation bound
    always sees both channels."""
    x, z, t, scored = noisy["tokens"], noisy["z"], noisy["t"], noisy["scored"]
    z_t = noisy["z_t"]
    if train:
      z = jnp.where(noisy["drop_x"][:, None] & scored, self.process.mask_id, z)
      z_t = jnp.where(noisy["drop_z"][:, None, None], 0.0, z_t)
    elif self.options.eval_without_z:
      z_t = jnp.zeros_like(z_t)
    logits, z_pred = self.denoise(z, z_t, t, noisy["t_z"], noisy["segment_ids"],
                                  noisy["positions"], rng=rng if train else None)
    divergence = self.process.divergence(logits, x, z, t)
    nelbo = self.process.nelbo(logits, x, z, t, scored, divergence)
    if train and self.options.loss_weighting == "dynamic":
      tokens = jnp.where(scored, self.process.dynamic_weight(x, z, t) * divergence, 0.0).sum()
    else:
      tokens = nelbo.sum()
    real = noisy["segment_ids"] > 0
    if train and not self.options.z_loss_when_dropped:
      real = real & ~noisy["drop_z"][:, None]
    weight = jnp.minimum(1.0 / jnp.maximum(1.0 - noisy["t_z"], 1e-6),
                         self.options.z_weight_max)
    mse = jnp.where(real, gaussian.x0_mse(z_pred, noisy["z0"], weight, mean_over_dim=True), 0.0)
    total = tokens + self.options.z_weight * mse.sum()
    return total, {"nelbo": nelbo.sum(), "mse": mse.sum(), "tokens": scored.sum(),
                   "masked": ((z == self.process.mask_id) & scored).sum()}


def fit_pca(encoder, rows: list[dict], latent_dim: int) -> dict:
  """Principal directions of the standardised encoder states of training rows, scaled so that
  each latent channel has unit variance: {'pca_mean', 'pca_proj'}."""
  h = encoders.token_states(encoder, rows, standardize)
  mean = h.mean(0)
  _, s, vt = np.linalg.svd(h - mean, full_matrices=False)
  std = s[:latent_dim] / np.sqrt(max(len(h) - 1, 1))
  proj = vt[:latent_dim].T / np.maximum(std, 1e-6)
  return {"pca_mean": mean.astype(np.float32), "pca_proj": proj.astype(np.float32)}


def pretrained(model: CCDD, config, tokenizer, sources) -> dict:
  """The encoder's Hugging Face weights, and a PCA fitted on training rows (`reduce='pca'`)."""
  del config, tokenizer
  encoder = encoders.load_matching(model.options.encoder, model.options.encoder_dtype,
                                   model.encoder.config)
  out = {"encoder": nnx.to_pure_dict(nnx.state(encoder))}
  if model.options.reduce == "pca":
    out.update(fit_pca(encoder, sources.rows(model.options.pca_rows, "the CCDD PCA"),
                       model.options.latent_dim))
  return out


def build(config, tokenizer, rngs: nnx.Rngs) -> CCDD:
  """The CCDD model of a config. The encoder's architecture is recorded in the config
  (`ccdd.encoder_arch`) the first time, so a checkpoint rebuilds it without the encoder files."""
  bert = encoders.recorded_config(config.ccdd)
  options = config_lib.options(CCDDConfig, config.ccdd)
  diffusion = masked.config_options(config)
  process = GiddProcess(diffusion.schedule_of(), mask_id=tokenizer.mask_id,
                        vocab_size=transformer.vocab_size(config, tokenizer),
                        p_uniform=options.p_uniform, gamma=options.gamma,
                        antithetic=diffusion.antithetic)
  return CCDD(transformer.for_tokenizer(config, tokenizer), process, options, bert,
              rngs)


FAMILY = registry.Family("ccdd", build, sections={"ccdd": CCDDConfig,
                                                   "diffusion": masked.MaskedConfig},
                         pretrained=pretrained)
