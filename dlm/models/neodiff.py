"""NeoDiff: non-simultaneous continuous diffusion (Li, Gao, Xu, ACL 2025, arXiv 2505.22165;
official code bc-li/neodiff, `neodiff_model.py`).

Each sequence draws an extrinsic time t; each token an intrinsic time tau_i from the Poisson
process of `dlm.processes.nonsim`; its embedding is noised with the sqrt schedule at
tau_i / tau_max (noise std scaled by `train_noise_scale`, 6.5 in the paper's code). The denoiser
sees every token's own time (a pair's source, `given`, has tau = 0 and stays clean) and returns
x_0 in embedding space; the anchor loss reads it through the shared embedding table.

The time predictor (paper §3.3, `TauPredictor`) is one transformer layer over the stop-gradient
x_0 estimate and the extrinsic time; it regresses tau / tau_max against rank labels: the token
with the lowest current loss (L_z + unsmoothed cross-entropy) gets the smallest Poisson quantile
(`nonsim.rank_labels`).

At given positions the self-conditioning input and the time predictor's input are the clean
embeddings e(x) in training, as in the sampler (dlm/samplers/neodiff.py), which holds given
positions at e(x) (a departure: self-conditioning as published feeds the network's own
estimates everywhere).

Loss (summed, unweighted as in the official script): L_z = mean_d (x0_hat - e(x))^2, the anchor
cross-entropy of x0_hat @ E^T (label smoothing 0.1), and L_tau = (tau_hat - tau*)^2 / tau_max^2.

Departures from the official code (besides the self-conditioning above): the anchor logits
read the table the diffusion runs in, E = sqrt(d) Emb, where the official code multiplies by
the unscaled Emb (`x0 . Emb`), so ours are sqrt(d) times sharper (the argmax, which decoding
reads, is the same; the cross-entropy's gradient is not); and its length predictor (loss
weight 0.1), length beam of 9 with BLEU-MBR reranking and averaging of the best checkpoints
are not implemented (README, NeoDiff).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from dlm import config as config_lib
from dlm import registry
from dlm.errors import DlmError
from dlm.models import transformer
from dlm.models.embedding_diffusion import EmbeddingDenoiser, TokenEmbedding
from dlm.models.family import given_mask, scored_mask, self_conditioned
from dlm.models.layers import param
from dlm.models.transformer import Transformer, TransformerConfig
from dlm.processes import gaussian, nonsim


@dataclasses.dataclass(frozen=True)
class NeoDiffConfig:
  """Config section `neodiff` (dlm/processes/nonsim.py for the times)."""

  embed_dim: int = 64
  num_tau: int = 100  # intrinsic time levels 0..num_tau-1 (tau_max = 99 in the paper's code)
  train_noise_scale: float = 6.5  # noise_factor of the official script; sampling uses 1
  self_condition: float = 0.5
  label_smoothing: float = 0.1  # anchor cross-entropy
  tau_loss_weight: float = 1.0

  def __post_init__(self):
    if not isinstance(self.num_tau, int) or self.num_tau < 2:
      raise DlmError(f"neodiff.num_tau must be an integer >= 2, got {self.num_tau!r}")
    if not isinstance(self.embed_dim, int) or self.embed_dim <= 0:
      raise DlmError(f"neodiff.embed_dim must be a positive integer, got {self.embed_dim!r}")
    if not 0.0 <= self.self_condition <= 1.0:
      raise DlmError(f"neodiff.self_condition must be in [0, 1], got {self.self_condition}")


class TimePredictor(nnx.Module):
  """One transformer layer on proj(stop_gradient(x0_hat)) with adaLN on the extrinsic time;
  a scalar per token: the predicted tau / tau_max."""

  def __init__(self, net_cfg: TransformerConfig, embed_dim: int, rngs: nnx.Rngs):
    cfg = dataclasses.replace(net_cfg, depth=1, token_inputs=False, out_features=1,
                              time_conditioning="adaln_zero", tie_embeddings=False,
                              scan_layers=False)
    self.in_proj = param(rngs, nnx.initializers.normal(embed_dim**-0.5),
                         (embed_dim, cfg.width), (None, "embed"))
    self.net = Transformer(cfg, rngs)

  def __call__(self, x0_hat, t_extrinsic, segment_ids=None, positions=None):
    h = jax.lax.stop_gradient(x0_hat) @ self.in_proj[...]
    t = jnp.broadcast_to(t_extrinsic[:, None], x0_hat.shape[:2])
    return self.net(h, t, segment_ids, positions)[..., 0]


class NeoDiff(nnx.Module):
  family = "neodiff"

  def __init__(self, net_cfg: TransformerConfig, options: NeoDiffConfig, rngs: nnx.Rngs):
    self.options = options
    self.schedule = gaussian.GaussianSchedule("sqrt")
    self.process = nonsim.PoissonProcess(num_tau=options.num_tau)
    self.embedding = TokenEmbedding(net_cfg.vocab_size, options.embed_dim, False, rngs)
    self.denoiser = EmbeddingDenoiser(net_cfg, options.embed_dim, rngs,
                                      out_features=options.embed_dim)
    self.time_predictor = TimePredictor(net_cfg, options.embed_dim, rngs)

  @property
  def tau_max(self) -> int:
    return self.options.num_tau - 1

  def denoise(self, z, s, x0_prev, segment_ids=None, positions=None, *, rng=None):
    """x_0 estimate (batch, length, embed_dim) at noisy z with per-token time s = tau/tau_max,
    given the previous estimate (zeros at the first step)."""
    return self.denoiser(z, x0_prev, s, segment_ids, positions, rng=rng)

  def anchor_logits(self, x0_hat) -> jax.Array:
    return x0_hat @ self.embedding.all().T

  def predict_time(self, x0_hat, t_extrinsic, segment_ids=None, positions=None) -> jax.Array:
    """Predicted per-token time tau / tau_max (unclipped)."""
    return self.time_predictor(x0_hat, t_extrinsic, segment_ids, positions)

  def corrupt(self, batch, rng):
    """Extrinsic t per sequence, intrinsic tau per token (0 where not scored), noise."""
    x = batch["tokens"]
    scored = scored_mask(batch)
    rng_t, rng_tau, rng_eps = jax.random.split(rng, 3)
    t = jax.random.uniform(rng_t, (x.shape[0],))
    tau = jnp.where(scored, self.process.sample_intrinsic(rng_tau, t, x.shape), 0)
    eps = jax.random.normal(rng_eps, x.shape + (self.options.embed_dim,))
    return {**batch, "t_extrinsic": t, "tau": tau, "eps": eps, "scored": scored}

  def loss(self, noisy, *, rng=None, train: bool = True):
    x, tau, scored = noisy["tokens"], noisy["tau"], noisy["scored"]
    seg, pos = noisy["segment_ids"], noisy["positions"]
    s = self.process.token_time(tau)
    e = self.embedding(x)
    # Scored tokens at tau = 0 still carry the sqrt schedule's alpha_bar(0) = 0.99 noise, as in
    # the official `Scheduler.forward`; given tokens (time 0) are clean.
    z = gaussian.forward_sample(None, e, s, self.schedule, self.options.train_noise_scale,
                                noise=noisy["eps"], exact_at_zero=False)
    z = jnp.where(scored[..., None], z, e)
    rng_sc, rng_net = (None, None) if rng is None else jax.random.split(rng)

    def first(x0_prev):
      return self.denoise(z, s, x0_prev, seg, pos)

    def second(x0_prev):
      return self.denoise(z, s, x0_prev, seg, pos, rng=rng_net if train else None)

    given = given_mask(noisy)
    zeros = jnp.zeros(e.shape, jnp.float32)
    if train and self.options.self_condition > 0:
      use = jax.random.bernoulli(rng_sc, self.options.self_condition)
      x0_hat = self_conditioned(first, second, zeros, use, given, e)
    else:
      x0_hat = second(zeros)
    mse = gaussian.x0_mse(x0_hat, e, mean_over_dim=True)
    logits = self.anchor_logits(x0_hat)
    labels = optax.smooth_labels(jax.nn.one_hot(x, logits.shape[-1]),
                                 self.options.label_smoothing)
    anchor = optax.softmax_cross_entropy(logits, labels)
    # The labels rank tokens by L_z + the unsmoothed cross-entropy (official `forward`).
    plain_ce = optax.softmax_cross_entropy_with_integer_labels(logits, x)
    tau_star = self.process.rank_labels(jax.lax.stop_gradient(mse + plain_ce),
                                        noisy["t_extrinsic"], scored)
    # The time predictor reads e(x) at given positions, as in the sampler.
    tau_hat = self.predict_time(jnp.where(given[..., None], e, x0_hat), noisy["t_extrinsic"],
                                seg, pos)
    tau_loss = jnp.square(tau_hat - tau_star / self.tau_max)
    mse, anchor, tau_loss = (jnp.where(scored, v, 0.0).sum() for v in (mse, anchor, tau_loss))
    total = mse + anchor + self.options.tau_loss_weight * tau_loss
    return total, {"loss": total, "mse": mse, "anchor": anchor, "tau": tau_loss,
                   "tokens": scored.sum()}


def build(config, tokenizer, rngs: nnx.Rngs) -> NeoDiff:
  return NeoDiff(transformer.for_tokenizer(config, tokenizer),
                 config_lib.options(NeoDiffConfig, config.neodiff), rngs)


FAMILY = registry.Family("neodiff", build, sections={"neodiff": NeoDiffConfig})
