"""ADJUST (Bansal and Sanghavi 2025, arXiv 2509.22738): a one-layer sampler head on a frozen
masked diffusion model, for approximate joint sampling of several tokens per full pass.

The module holds the frozen base (`base`, a `MaskedDiffusion` of the architecture in
`config.model`, filled from `train.init_from` with `train.init_into='base'`) and the trainable
`head` (`SamplerLayer`): from the tokens x' of the current sequence and the previous hidden
states h_prev,

    h_in = W_down [RMSNorm(E(x')) ; RMSNorm(h_prev)]         E: the base's frozen embeddings
    out  = one bidirectional transformer block (shared across unrolls)
    h    = RMSNorm(out) + h_prev,   logits = the base's frozen output head(h).

With `joint.zero_init` the last RMSNorm's scale starts at zero, so the untrained head returns
h_prev: the marginal baseline.

Training (`corrupt` + `loss`, through train.py) reads trajectories of the base model's exact
one-token-per-pass lowest-entropy sampler (`python -m dlm.joint_data`: rows of `tokens` and
the reveal `order`). It masks a random fraction t ~ U(0, 1) of each row (`joint.noising`:
the last fraction of the trajectory's reveal order, 'trajectory', the states the sampler meets,
as the paper's code's default data, windows of the exact sampler's trajectories
(`entropy_history_*` configs); or 'random' positions, its fallback), runs the base once (h, logits), then unrolls the
head `joint.unrolls` times; unroll j reveals one more masked position with its trajectory token
(the lowest-entropy one under the base's logits for 'random', the next in the trajectory's order
for 'trajectory') and refreshes all hidden states. Each row takes its loss at one unroll
K ~ U{1..unrolls} (the paper's code draws K per batch): KL(p_base(. | revealed) || p_head) summed
over the positions still masked there, with the base's distribution on the partially revealed
sequence as the target (one more frozen forward pass).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from dlm import config as config_lib
from dlm import registry
from dlm.errors import DlmError
from dlm.models import masked
from dlm.models.family import given_mask, layout, scored_mask
from dlm.models.layers import RMSNorm, attention_mask, param
from dlm.models.masked import MaskedDiffusion
from dlm.models.transformer import Block, TransformerConfig
from dlm.processes.categorical import entropy, zero_masking

NOISINGS = ("trajectory", "random")
BIG_NEG = -1e9  # [MASK]'s logit in the KL (finite: no 0 * inf)
# What a head adopts from its base's stored config (`adopt_base`): the base's architecture,
# its process and the layout of its data.
BASE_KEYS = ("model.width", "model.depth", "model.heads", "model.mlp_ratio",
             "model.time_conditioning", "model.cond_width", "model.attention",
             "model.block_size", "model.rope_theta", "model.head_init_std",
             "model.tie_embeddings", "model.lora_rank", "model.lora_alpha", "diffusion",
             "data.seq_len", "data.tokenizer.num_reserved_pads", "data.tokenizer.special_tokens")


@dataclasses.dataclass(frozen=True)
class JointConfig:
  """Config section `joint` (model.family='joint_head'; the base is the masked model that the
  other `model` keys and `diffusion` describe)."""

  unrolls: int = 7  # head unrolls in training (the paper's speculation_len); loss at K ~ U{1..}
  # which tokens training masks: 'trajectory' (the last fraction of each row's reveal order:
  # states of the exact sampler) or 'random' (random positions; reveals then follow the
  # base's entropy)
  noising: str = "trajectory"
  zero_init: bool = True  # the head's output norm starts at 0: the untrained head is the marginal

  def __post_init__(self):
    if self.noising not in NOISINGS or not isinstance(self.unrolls, int) or self.unrolls < 1:
      raise DlmError(f"joint.noising must be one of {NOISINGS} and joint.unrolls >= 1, got "
                     f"{self.noising!r} and {self.unrolls!r}")


class SamplerLayer(nnx.Module):
  """h_prev, token embeddings -> new hidden states (see the module doc)."""

  def __init__(self, cfg: TransformerConfig, zero_init: bool, rngs: nnx.Rngs):
    d = cfg.width
    self.cfg = cfg
    self.norm_embed = RMSNorm(d, rngs)
    self.norm_hidden = RMSNorm(d, rngs)
    self.down = param(rngs, nnx.initializers.normal((2 * d) ** -0.5), (2, d, d),
                      (None, None, "embed"))
    self.block = Block(cfg, rngs)
    self.norm_out = RMSNorm(d, rngs)
    if zero_init:
      self.norm_out.scale[...] = jnp.zeros((d,), jnp.float32)

  def __call__(self, embedded, h_prev, mask, positions):
    dt = jnp.dtype(self.cfg.dtype)
    w = self.down[...].astype(dt)
    x = (jnp.einsum("bld,de->ble", self.norm_embed(embedded).astype(dt), w[0])
         + jnp.einsum("bld,de->ble", self.norm_hidden(h_prev).astype(dt), w[1]))
    out = self.block(x, None, mask, positions, None)
    return (self.norm_out(out) + h_prev).astype(h_prev.dtype)


class JointHead(nnx.Module):
  """A frozen masked diffusion model (`base`) and ADJUST's sampler head (`head`): samplers
  call `denoise` (a full pass of the base) and `refine` (a pass of the head)."""
  family = "joint_head"

  def __init__(self, base: MaskedDiffusion, options: JointConfig, rngs: nnx.Rngs):
    if not base.net.cfg.token_inputs:
      raise DlmError("the joint head needs a base with token inputs")
    self.base = base
    self.options = options
    head_cfg = dataclasses.replace(base.net.cfg, depth=1, time_conditioning="none", dropout=0.0,
                                   remat="none", scan_layers=False, attention="bidirectional")
    self.head = SamplerLayer(head_cfg, options.zero_init, rngs)

  @property
  def process(self):
    return self.base.process

  @property
  def mask_id(self) -> int:
    return self.base.process.mask_id

  def _times(self, z, given):
    """The base's per-token time: the masked fraction of each row (0 at given tokens)."""
    free = ~given
    frac = (jnp.sum((z == self.mask_id) & free, -1) / jnp.maximum(jnp.sum(free, -1), 1))
    return jnp.where(given, 0.0, frac[:, None]).astype(jnp.float32)

  def denoise(self, z, given, segment_ids=None, positions=None):
    """One full pass of the base: (logits with [MASK] at -inf, hidden states)."""
    net = self.base.net
    t = self._times(z, given) if net.cfg.conditioned else None
    h = net.features(z, t, segment_ids, positions)
    return zero_masking(net.head(h), self.mask_id), h

  def refine(self, z, h_prev, segment_ids=None, positions=None):
    """One sampler pass: (logits with [MASK] at -inf, hidden states) after the tokens z."""
    net = self.base.net
    segment_ids, positions = layout(z.shape, segment_ids, positions)
    embedded = jnp.take(net.embed[...], z, axis=0)
    h = self.head(embedded, h_prev, attention_mask(segment_ids, "bidirectional"), positions)
    return zero_masking(net.head(h), self.mask_id), h

  def corrupt(self, batch, rng):
    x = batch["tokens"]
    maskable = scored_mask(batch)
    rng_t, rng_mask, rng_k = jax.random.split(rng, 3)
    t = jax.random.uniform(rng_t, (x.shape[0], 1))
    if self.options.noising == "trajectory":
      if "order" not in batch:
        raise DlmError("joint.noising='trajectory' needs rows with a reveal 'order' "
                       "(trajectories from python -m dlm.joint_data, data.pretokenized=True)")
      order = batch["order"]
      # rank of each position in the trajectory among this row's maskable positions
      key = jnp.where(maskable, order, jnp.iinfo(jnp.int32).max)
      rank = jnp.argsort(jnp.argsort(key, axis=-1), axis=-1)
      n = jnp.sum(maskable, -1, keepdims=True)
      keep = jnp.floor((1.0 - t) * n).astype(jnp.int32)
      masked = maskable & (rank >= keep)
    else:
      order = jnp.zeros_like(x)
      masked = maskable & (jax.random.uniform(rng_mask, x.shape) < t)
    z = jnp.where(masked, self.mask_id, x)
    k = jax.random.randint(rng_k, (x.shape[0],), 1, self.options.unrolls + 1)
    return {**batch, "z": z, "maskable": maskable, "unroll": k, "reveal_key": order}

  def _next_position(self, z, x_order, base_entropy):
    """The position each row reveals next (-1 if none is masked)."""
    masked = z == self.mask_id
    if self.options.noising == "trajectory":
      score = jnp.where(masked, x_order.astype(jnp.float32), jnp.inf)
    else:
      score = jnp.where(masked, base_entropy, jnp.inf)
    pos = jnp.argmin(score, axis=-1)
    return jnp.where(jnp.any(masked, -1), pos, -1)

  def loss(self, noisy, *, rng=None, train: bool = True):
    del rng, train
    x, z, maskable = noisy["tokens"], noisy["z"], noisy["maskable"]
    seg, pos = noisy["segment_ids"], noisy["positions"]
    given = given_mask(noisy)
    base_logits, h = self.denoise(z, given, seg, pos)
    base_logits, h = jax.lax.stop_gradient(base_logits), jax.lax.stop_gradient(h)
    ent = entropy(base_logits)
    rows = jnp.arange(x.shape[0])
    head_logits = base_logits
    chosen_z, chosen_logits = z, base_logits
    for j in range(1, self.options.unrolls + 1):
      p = self._next_position(z, noisy["reveal_key"], ent)
      safe = jnp.maximum(p, 0)
      z = z.at[rows, safe].set(jnp.where(p >= 0, x[rows, safe], z[rows, safe]))
      head_logits, h = self.refine(z, h, seg, pos)
      here = (noisy["unroll"] == j)[:, None]
      chosen_z = jnp.where(here, z, chosen_z)
      chosen_logits = jnp.where(here[..., None], head_logits, chosen_logits)
    target, _ = self.denoise(chosen_z, given, seg, pos)
    target = jax.lax.stop_gradient(target)
    scored = (chosen_z == self.mask_id) & maskable
    kl = _kl(target, chosen_logits)
    kl_marginal = _kl(target, base_logits)  # what the marginal baseline would pay
    total = jnp.sum(jnp.where(scored, kl, 0.0))
    return total, {"loss": total, "tokens": scored.sum(),
                   "kl_marginal": jnp.sum(jnp.where(scored, kl_marginal, 0.0))}


def _kl(target_logits, logits):
  """KL(softmax(target) || softmax(logits)) per position; -inf logits count as BIG_NEG."""
  lt = jax.nn.log_softmax(jnp.maximum(target_logits, BIG_NEG), -1)
  lq = jax.nn.log_softmax(jnp.maximum(logits, BIG_NEG), -1)
  return jnp.sum(jnp.exp(lt) * (lt - lq), -1)


def build(config, tokenizer, rngs: nnx.Rngs) -> JointHead:
  """The head on a masked base of the architecture that `config.model` describes."""
  return JointHead(masked.build(config, tokenizer, rngs),
                   config_lib.options(JointConfig, config.joint), rngs)


def check(config) -> None:
  train = config.train
  if not train.init_from or train.init_into.strip("/") != "base":
    raise DlmError("model.family='joint_head' trains a head on a frozen base: set "
                   "train.init_from to the base's workdir and train.init_into='base' "
                   "(configs/joint_head.py does)")


def adopt_base(config, read_config) -> None:
  """The base's architecture, process and data layout, from its workdir's stored config (so
  the head's workdir alone samples, and the pretokenized trajectories fit)."""
  stored = read_config(config.train.init_from)
  if stored.model.family != "masked":
    raise DlmError(f"the base {config.train.init_from!r} is a {stored.model.family} model; a "
                   "joint head needs a masked one")
  config_lib.adopt(config, stored, BASE_KEYS)


FAMILY = registry.Family("joint_head", build, sections={"joint": JointConfig,
                                                         "diffusion": masked.MaskedConfig},
                         check=check, resolve=adopt_base, frozen_prefixes=("base",))
