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
embeddings e(x) in training, as in the sampler (dlm/samplers/continuous.py), which holds given
positions at e(x) (a departure: self-conditioning as published feeds the network's own
estimates everywhere).

Loss (summed, unweighted as in the official script): L_z = mean_d (x0_hat - e(x))^2, the anchor
cross-entropy of x0_hat @ E^T (label smoothing 0.1), and L_tau = (tau_hat - tau*)^2 / tau_max^2.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from dlm.models.embedding_diffusion import (EmbeddingDenoiser, TokenEmbedding, given_mask,
                                            self_conditioned, target_mask)
from dlm.models.layers import param
from dlm.models.transformer import Transformer, TransformerConfig
from dlm.processes import gaussian, nonsim


@dataclasses.dataclass(frozen=True)
class NeoDiffConfig:
  embed_dim: int = 64
  num_tau: int = 100  # tau in 0..num_tau - 1
  train_noise_scale: float = 6.5  # noise_factor of the official script (1.0 when sampling)
  self_condition: float = 0.5
  label_smoothing: float = 0.1  # anchor loss
  tau_loss_weight: float = 1.0


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

  def __init__(self, net_cfg: TransformerConfig, cfg: NeoDiffConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.schedule = gaussian.GaussianSchedule("sqrt")
    self.process = nonsim.PoissonProcess(num_tau=cfg.num_tau)
    self.embedding = TokenEmbedding(net_cfg.vocab_size, cfg.embed_dim, False, rngs)
    self.denoiser = EmbeddingDenoiser(net_cfg, cfg.embed_dim, rngs, out_features=cfg.embed_dim)
    self.time_predictor = TimePredictor(net_cfg, cfg.embed_dim, rngs)

  @property
  def tau_max(self) -> int:
    return self.cfg.num_tau - 1

  def x0(self, z, s, x0_prev, segment_ids=None, positions=None, *, rng=None):
    """x_0 estimate (batch, length, embed_dim) at noisy z with per-token time s = tau/tau_max."""
    return self.denoiser(z, x0_prev, s, segment_ids, positions, rng=rng)

  def anchor_logits(self, x0_hat) -> jax.Array:
    return x0_hat @ self.embedding.all().T

  def predict_time(self, x0_hat, t_extrinsic, segment_ids=None, positions=None) -> jax.Array:
    """Predicted per-token time tau / tau_max (unclipped)."""
    return self.time_predictor(x0_hat, t_extrinsic, segment_ids, positions)

  def corrupt(self, batch, rng):
    """Extrinsic t per sequence, intrinsic tau per token (0 where not a target), noise."""
    x = batch["tokens"]
    target = target_mask(batch)
    rng_t, rng_tau, rng_eps = jax.random.split(rng, 3)
    t = jax.random.uniform(rng_t, (x.shape[0],))
    tau = jnp.where(target, self.process.sample_intrinsic(rng_tau, t, x.shape), 0)
    eps = jax.random.normal(rng_eps, x.shape + (self.cfg.embed_dim,))
    return {**batch, "t_extrinsic": t, "tau": tau, "eps": eps, "target": target}

  def loss(self, noisy, *, rng=None, train: bool = True):
    x, tau, target = noisy["tokens"], noisy["tau"], noisy["target"]
    seg, pos = noisy["segment_ids"], noisy["positions"]
    s = self.process.token_time(tau)
    e = self.embedding(x)
    # Targets at tau = 0 still carry the sqrt schedule's alpha_bar(0) = 0.99 noise, as in the
    # official `Scheduler.forward`; given tokens (time 0) are clean.
    z = gaussian.forward_sample(None, e, s, self.schedule, self.cfg.train_noise_scale,
                                noise=noisy["eps"], exact_at_zero=False)
    z = jnp.where(target[..., None], z, e)
    rng_sc, rng_net = (None, None) if rng is None else jax.random.split(rng)

    def first(x0_prev):
      return self.x0(z, s, x0_prev, seg, pos)

    def second(x0_prev):
      return self.x0(z, s, x0_prev, seg, pos, rng=rng_net if train else None)

    given = given_mask(noisy)
    x0_hat = self_conditioned(first, second, e.shape, self.cfg.self_condition, rng_sc, train,
                              given, e)
    mse = jnp.mean(jnp.square(x0_hat - e), axis=-1)
    logits = self.anchor_logits(x0_hat)
    labels = optax.smooth_labels(jax.nn.one_hot(x, logits.shape[-1]), self.cfg.label_smoothing)
    anchor = optax.softmax_cross_entropy(logits, labels)
    # The labels rank tokens by L_z + the unsmoothed cross-entropy (official `forward`).
    plain_ce = optax.softmax_cross_entropy_with_integer_labels(logits, x)
    tau_star = self.process.rank_labels(jax.lax.stop_gradient(mse + plain_ce),
                                        noisy["t_extrinsic"], target)
    # The time predictor reads e(x) at given positions, as in the sampler.
    tau_hat = self.predict_time(jnp.where(given[..., None], e, x0_hat), noisy["t_extrinsic"],
                                seg, pos)
    tau_loss = jnp.square(tau_hat - tau_star / self.tau_max)
    mse, anchor, tau_loss = (jnp.where(target, v, 0.0).sum() for v in (mse, anchor, tau_loss))
    total = mse + anchor + self.cfg.tau_loss_weight * tau_loss
    return total, {"loss": total, "mse": mse, "anchor": anchor, "tau": tau_loss,
                   "tokens": target.sum()}
