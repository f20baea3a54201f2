"""Model families on the shared backbone, built from `config.model.family`."""

from __future__ import annotations

from flax import nnx

from dlm import sharding
from dlm.errors import DlmError
from dlm.models.transformer import TransformerConfig

FAMILIES = ("masked", "continuous", "neodiff", "autoregressive", "ccdd", "cosmos_ae", "cosmos",
            "any_order", "joint_head")


def transformer_config(config, vocab_size: int, **overrides) -> TransformerConfig:
  m = config.model
  fields = dict(
      vocab_size=vocab_size, width=m.width, depth=m.depth, heads=m.heads,
      mlp_ratio=m.mlp_ratio, time_conditioning=m.time_conditioning, cond_width=m.cond_width,
      attention=m.attention, block_size=m.block_size, rope_theta=m.rope_theta,
      dropout=m.dropout, dtype=m.dtype, remat=m.remat, scan_layers=m.scan_layers,
      attention_impl=m.attention_impl, head_init_std=m.head_init_std,
      tie_embeddings=m.tie_embeddings, rules=sharding.normalize_rules(config.mesh.rules),
      lora_rank=m.get("lora_rank", 0), lora_alpha=m.get("lora_alpha", 16.0),
  )
  fields.update(overrides)
  return TransformerConfig(**fields)


def build(config, tokenizer, rngs: nnx.Rngs) -> nnx.Module:
  """The model of `config.model.family` for this tokenizer's vocabulary."""
  family = config.model.family
  if family == "joint_head":  # the base is the masked model that config.model describes
    from dlm.models.joint_head import JointConfig, JointHead  # pylint: disable=g-import-not-at-top

    base_config = config.copy_and_resolve_references()
    with base_config.unlocked():
      base_config.model.family = "masked"
    return JointHead(build(base_config, tokenizer, rngs), JointConfig(**config.joint.to_dict()),
                     rngs)
  if family == "masked":
    from dlm.models.masked import MaskedDiffusion  # pylint: disable=g-import-not-at-top
    from dlm.processes.masked import MaskedProcess  # pylint: disable=g-import-not-at-top
    from dlm.processes.schedules import MaskingSchedule  # pylint: disable=g-import-not-at-top

    d = config.diffusion
    process = MaskedProcess(
        schedule=MaskingSchedule(d.schedule, d.power, d.eps),
        mask_id=tokenizer.mask_id, vocab_size=tokenizer.vocab_size,
        timesteps=d.timesteps, antithetic=d.antithetic,
    )
    return MaskedDiffusion(transformer_config(config, tokenizer.vocab_size), process, rngs,
                           loss_norm=d.get("loss_norm", "token"))
  if family == "continuous":
    from dlm.models.continuous import ContinuousConfig, ContinuousDiffusion  # pylint: disable=g-import-not-at-top

    return ContinuousDiffusion(transformer_config(config, tokenizer.vocab_size),
                               ContinuousConfig(**config.continuous.to_dict(),
                                                antithetic=config.diffusion.antithetic), rngs)
  if family == "neodiff":
    from dlm.models.neodiff import NeoDiff, NeoDiffConfig  # pylint: disable=g-import-not-at-top

    return NeoDiff(transformer_config(config, tokenizer.vocab_size),
                   NeoDiffConfig(**config.neodiff.to_dict()), rngs)
  if family == "autoregressive":
    from dlm.models.autoregressive import AutoRegressive  # pylint: disable=g-import-not-at-top

    return AutoRegressive(transformer_config(config, tokenizer.vocab_size), rngs)
  if family == "ccdd":
    from dlm.models import ccdd  # pylint: disable=g-import-not-at-top

    return ccdd.build(config, tokenizer, transformer_config(config, tokenizer.vocab_size), rngs)
  if family in ("cosmos_ae", "cosmos"):
    from dlm.models import cosmos  # pylint: disable=g-import-not-at-top

    return cosmos.build(config, tokenizer, transformer_config(config, tokenizer.vocab_size),
                        rngs)
  if family == "any_order":
    from dlm.models.any_order import AnyOrderAR, AnyOrderConfig  # pylint: disable=g-import-not-at-top

    return AnyOrderAR(transformer_config(config, tokenizer.vocab_size),
                      AnyOrderConfig(**config.any_order.to_dict()), tokenizer.mask_id, rngs)
  raise DlmError(f"unknown model.family {family!r}; expected one of {FAMILIES}")
