"""LLaDA (Nie et al. 2025; GSAI-ML/LLaDA-8B-Base and -Instruct): a bidirectional Llama-shaped
masked diffusion model under OLMo's tensor names (`modeling_llada.py`, `LLaDALlamaBlock`:
`ff_proj` is the SiLU-gated projection, `up_proj` the linear one, `ff_out` the down projection;
rotary positions are rotate_half). Converted to the `masked` family without time input."""

from __future__ import annotations

from dlm.convert import layout
from dlm.convert.layout import Tensor
from dlm.convert import llama_like
from dlm.convert.llama_like import block_tensors

_NAMES = {k: f"model.transformer.blocks.{{i}}.{v}" for k, v in dict(
    q="q_proj", k="k_proj", v="v_proj", o="attn_out", gate="ff_proj", up="up_proj",
    down="ff_out", norm_attn="attn_norm", norm_mlp="ff_norm").items()}


def _shape(hf: dict) -> dict:
  d = layout.get(hf, "d_model")
  heads = layout.get(hf, "n_heads")
  kv_heads = layout.get(hf, "n_kv_heads", default=heads)
  hidden = hf.get("mlp_hidden_size") or int(layout.get(hf, "mlp_ratio", default=4) * d)
  rows = layout.get(hf, "embedding_size", "vocab_size")
  return dict(d=d, heads=heads, kv_heads=kv_heads, hidden=hidden, rows=rows,
              depth=layout.get(hf, "n_layers"), tied=bool(hf.get("weight_tying", False)),
              qkv_bias=bool(hf.get("include_qkv_bias", False)))


def config(hf: dict) -> dict:
  layout.refuse(hf, "block_type", "llama", "a LLaDA block other than 'llama'")
  layout.refuse(hf, "layer_norm_type", "rms", "a norm other than RMSNorm")
  layout.refuse(hf, "activation_type", "silu", "an activation other than SiLU (SwiGLU)")
  layout.refuse(hf, "alibi", False, "ALiBi")
  layout.refuse(hf, "rope", True, "a model without rotary positions")
  layout.refuse(hf, "include_bias", False, "biases beyond q/k/v")
  layout.refuse(hf, "scale_logits", False, "logit scaling")
  layout.refuse(hf, "input_emb_norm", False, "a norm on the input embeddings")
  layout.refuse(hf, "attention_layer_norm", False, "q/k norms")
  layout.refuse(hf, "clip_qkv", None, "q/k/v clipping")
  s = _shape(hf)
  return llama_like.masked_config(
      s, hf.get("rope_theta", 1e4), hf.get("rms_norm_eps", 1e-5), s["qkv_bias"],
      context=layout.get(hf, "max_sequence_length", default=4096))


def tensors(hf: dict) -> list[Tensor]:
  s = _shape(hf)
  head_dim = s["d"] // s["heads"]
  out = [Tensor("model.transformer.wte.weight", (s["rows"], s["d"]), "net/embed"),
         Tensor("model.transformer.ln_f.weight", (s["d"],), "net/norm_out/scale")]
  if not s["tied"]:
    out.append(Tensor("model.transformer.ff_out.weight", (s["rows"], s["d"]), "net/unembed",
                      linear=True))
  for i in range(s["depth"]):
    out += block_tensors(_NAMES, i, s["d"], s["heads"], s["kv_heads"], head_dim, s["hidden"],
                         s["qkv_bias"])
  return out


def roles(hf: dict, tokenizer_config: dict, vocab_by_id: dict) -> dict:
  return layout.id_roles(hf, tokenizer_config, vocab_by_id, ("<|eot_id|>",))


def hf_config(config, rows: int, ids: dict) -> dict:
  """config.json of a dlm masked model in LLaDA's layout (`--to_hf`)."""
  m = config.model
  return {
      "architectures": ["LLaDAModelLM"], "model_type": "llada",
      "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig",
                   "AutoModel": "modeling_llada.LLaDAModelLM",
                   "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM"},
      "d_model": m.width, "n_heads": m.heads, "n_kv_heads": m.kv_heads or m.heads,
      "n_layers": m.depth, "mlp_hidden_size": m.mlp_dim or int(m.mlp_ratio * m.width),
      "mlp_ratio": (m.mlp_dim or int(m.mlp_ratio * m.width)) / m.width,
      "vocab_size": rows, "embedding_size": rows, "rope_theta": m.rope_theta,
      "rms_norm_eps": m.norm_eps, "weight_tying": m.tie_embeddings,
      "include_qkv_bias": m.qkv_bias, "include_bias": False, "block_type": "llama",
      "layer_norm_type": "rms", "activation_type": "silu", "alibi": False, "rope": True,
      "scale_logits": False, "input_emb_norm": False, "attention_layer_norm": False,
      "max_sequence_length": config.data.seq_len, "mask_token_id": ids["mask"],
      "eos_token_id": ids["eos"], "bos_token_id": ids["bos"], "pad_token_id": ids["pad"],
      "torch_dtype": m.param_dtype, "use_cache": False,
  }


def _expressible(config) -> str:
  m = config.model
  if m.family != "masked" or m.time_conditioning != "none":
    return "LLaDA's layout holds masked models without time conditioning"
  for key, want in (("norm", "rms"), ("mlp", "swiglu"), ("positions", "rotary"),
                    ("rope_layout", "half"), ("shift_logits", False), ("head_bias", False),
                    ("attn_out_bias", False), ("lora_rank", 0)):
    if m[key] != want:
      return f"LLaDA's layout needs model.{key}={want!r} (this model has {m[key]!r})"
  if m.tie_embeddings and m.tied_head_scale != 1.0:
    return "LLaDA's tied head needs model.tied_head_scale=1"
  return ""


ARCH = layout.Arch("llada", ("llada",), config, tensors, roles, hf_config=hf_config,
                   expressible=_expressible)
