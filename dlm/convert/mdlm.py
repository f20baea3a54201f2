"""MDLM (Sahoo et al. 2024; kuleshov-group/mdlm-owt): a DiT (`models/dit.py`, `DIT`/`DDiTBlock`)
with LayerNorms without bias, rotate_half rotary positions, a tanh-GELU MLP with biases and
adaLN modulations with biases on the conditioning `c = silu(sigma_map(sigma))`, where
`sigma_map` embeds the noise level sigma (unscaled sinusoids, then Linear-SiLU-Linear with
biases). The released OWT model was trained with `time_conditioning=False` (sigma always 0:
`model.time_input='zero'`); a model trained with it reads the loglinear schedule's
sigma = -log(1 - (1 - eps) t) (`'sigma_loglinear'`). MDLM's subs parameterisation (the mask
logit at -inf, unmasked tokens copied) is dlm's masked process. Converted to the `masked`
family, loglinear schedule, eps 1e-3."""

from __future__ import annotations

from dlm.convert import layout
from dlm.convert.layout import Tensor


def _shape(hf: dict) -> dict:
  return dict(d=layout.get(hf, "hidden_dim", "hidden_size"), heads=layout.get(hf, "n_heads"),
              depth=layout.get(hf, "n_blocks"), cond=layout.get(hf, "cond_dim"),
              rows=layout.get(hf, "vocab_size"))


def config(hf: dict) -> dict:
  s = _shape(hf)
  timed = bool(hf.get("time_conditioning", False))
  return {
      "model.family": "masked", "model.width": s["d"], "model.depth": s["depth"],
      "model.heads": s["heads"], "model.mlp_dim": 4 * s["d"], "model.vocab_size": s["rows"],
      "model.time_conditioning": "adaln_zero", "model.cond_width": s["cond"],
      "model.time_bias": True, "model.time_input": "sigma_loglinear" if timed else "zero",
      "model.norm": "layer", "model.norm_bias": False, "model.norm_eps": 1e-5,
      "model.mlp": "gelu", "model.mlp_bias": True, "model.head_bias": True,
      "model.rope_theta": 10_000.0, "diffusion.schedule": "loglinear", "diffusion.eps": 1e-3,
      "context": layout.get(hf, "model_length", "block_size", default=1024),
  }


def tensors(hf: dict) -> list[Tensor]:
  s = _shape(hf)
  d, c = s["d"], s["cond"]
  out = [Tensor("backbone.vocab_embed.embedding", (s["rows"], d), "net/embed"),
         Tensor("backbone.sigma_map.mlp.0.weight", (c, 256), "net/time_in", linear=True),
         Tensor("backbone.sigma_map.mlp.0.bias", (c,), "net/time_in_bias"),
         Tensor("backbone.sigma_map.mlp.2.weight", (c, c), "net/time_hidden", linear=True),
         Tensor("backbone.sigma_map.mlp.2.bias", (c,), "net/time_hidden_bias"),
         Tensor("backbone.output_layer.norm_final.weight", (d,), "net/norm_out/scale"),
         Tensor("backbone.output_layer.adaLN_modulation.weight", (2 * d, c),
                "net/final_modulation", linear=True),
         Tensor("backbone.output_layer.adaLN_modulation.bias", (2 * d,),
                "net/final_modulation_bias"),
         Tensor("backbone.output_layer.linear.weight", (s["rows"], d), "net/unembed",
                linear=True),
         Tensor("backbone.output_layer.linear.bias", (s["rows"],), "net/unembed_bias")]
  for i in range(s["depth"]):
    h, b = f"backbone.blocks.{i}", f"net/blocks/{i}"
    out += [
        Tensor(f"{h}.norm1.weight", (d,), f"{b}/norm_attn/scale"),
        Tensor(f"{h}.attn_qkv.weight", (3 * d, d), f"{b}/attn/wqkv", linear=True),
        Tensor(f"{h}.attn_out.weight", (d, d), f"{b}/attn/wo", linear=True),
        Tensor(f"{h}.norm2.weight", (d,), f"{b}/norm_mlp/scale"),
        Tensor(f"{h}.mlp.0.weight", (4 * d, d), f"{b}/mlp/w_in", linear=True),
        Tensor(f"{h}.mlp.0.bias", (4 * d,), f"{b}/mlp/b_in"),
        Tensor(f"{h}.mlp.2.weight", (d, 4 * d), f"{b}/mlp/w_down", linear=True),
        Tensor(f"{h}.mlp.2.bias", (d,), f"{b}/mlp/b_down"),
        Tensor(f"{h}.adaLN_modulation.weight", (6 * d, c), f"{b}/modulation", linear=True),
        Tensor(f"{h}.adaLN_modulation.bias", (6 * d,), f"{b}/modulation_bias"),
    ]
  return out


def _ignored(name: str) -> bool:
  return name.endswith("rotary_emb.inv_freq")


def roles(hf: dict, tokenizer_config: dict, vocab_by_id: dict) -> dict:
  """GPT-2's tokenizer with `[MASK]` as the last row (MDLM adds it when the tokenizer has no
  mask token); bos and eos are `<|endoftext|>`."""
  del tokenizer_config
  rows = _shape(hf)["rows"]
  eos = "<|endoftext|>" if "<|endoftext|>" in vocab_by_id.values() else ""
  mask = vocab_by_id.get(rows - 1, "")
  return {"mask": mask if mask != eos else "", "bos": eos, "eos": eos, "pad": eos, "stop": []}


ARCH = layout.Arch("mdlm", ("mdlm",), config, tensors, roles, ignored=_ignored)
