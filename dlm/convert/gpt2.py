"""GPT-2 (Radford et al. 2019; openai-community/gpt2 ... gpt2-xl): the judge of generative
perplexity in MDLM, SEDD and their successors. LayerNorm with biases, learned positions, a
tanh-GELU MLP with biases, biases on q/k/v and the attention output, causal attention and a head
tied to the embedding without a bias. HF stores `Conv1D` weights as (in, out), so nothing is
transposed. Converted to the `autoregressive` family; the mask role (which an autoregressive
model never reads) is `<|endoftext|>`, so that the tokenizer gains no token the embedding
lacks."""

from __future__ import annotations

from dlm.convert import layout
from dlm.convert.layout import Tensor

_ALL = slice(None)


def _shape(hf: dict) -> dict:
  d = layout.get(hf, "n_embd")
  return dict(d=d, heads=layout.get(hf, "n_head"), depth=layout.get(hf, "n_layer"),
              hidden=hf.get("n_inner") or 4 * d, rows=layout.get(hf, "vocab_size"),
              positions=layout.get(hf, "n_positions"))


def config(hf: dict) -> dict:
  layout.refuse(hf, "activation_function", ("gelu_new", "gelu_pytorch_tanh"),
                "an activation other than tanh-GELU")
  layout.refuse(hf, "scale_attn_weights", True, "unscaled attention")
  layout.refuse(hf, "scale_attn_by_inverse_layer_idx", False, "attention scaled by layer")
  layout.refuse(hf, "tie_word_embeddings", True, "an untied head")
  s = _shape(hf)
  return {
      "model.family": "autoregressive", "model.width": s["d"], "model.depth": s["depth"],
      "model.heads": s["heads"], "model.mlp_dim": s["hidden"], "model.vocab_size": s["rows"],
      "model.time_conditioning": "none", "model.attention": "causal", "model.norm": "layer",
      "model.norm_bias": True, "model.norm_eps": float(hf.get("layer_norm_epsilon", 1e-5)),
      "model.mlp": "gelu", "model.mlp_bias": True, "model.qkv_bias": True,
      "model.attn_out_bias": True, "model.positions": "learned",
      "model.max_positions": s["positions"], "model.head_bias": False,
      "model.tie_embeddings": True, "model.tied_head_scale": 1.0, "context": s["positions"],
  }


def tensors(hf: dict) -> list[Tensor]:
  s = _shape(hf)
  d, hidden = s["d"], s["hidden"]
  out = [Tensor("wte.weight", (s["rows"], d), "net/embed"),
         Tensor("wpe.weight", (s["positions"], d), "net/pos_embed"),
         Tensor("ln_f.weight", (d,), "net/norm_out/scale"),
         Tensor("ln_f.bias", (d,), "net/norm_out/bias")]
  for i in range(s["depth"]):
    h, b = f"h.{i}", f"net/blocks/{i}"
    out += [
        Tensor(f"{h}.ln_1.weight", (d,), f"{b}/norm_attn/scale"),
        Tensor(f"{h}.ln_1.bias", (d,), f"{b}/norm_attn/bias"),
        Tensor(f"{h}.attn.c_attn.weight", (d, 3 * d), f"{b}/attn/wqkv"),
        Tensor(f"{h}.attn.c_attn.bias", (3 * d,), f"{b}/attn/bqkv"),
        Tensor(f"{h}.attn.c_proj.weight", (d, d), f"{b}/attn/wo"),
        Tensor(f"{h}.attn.c_proj.bias", (d,), f"{b}/attn/bo"),
        Tensor(f"{h}.ln_2.weight", (d,), f"{b}/norm_mlp/scale"),
        Tensor(f"{h}.ln_2.bias", (d,), f"{b}/norm_mlp/bias"),
        Tensor(f"{h}.mlp.c_fc.weight", (d, hidden), f"{b}/mlp/w_in"),
        Tensor(f"{h}.mlp.c_fc.bias", (hidden,), f"{b}/mlp/b_in"),
        Tensor(f"{h}.mlp.c_proj.weight", (hidden, d), f"{b}/mlp/w_down"),
        Tensor(f"{h}.mlp.c_proj.bias", (d,), f"{b}/mlp/b_down"),
    ]
  return out


def _ignored(name: str) -> bool:
  # The causal-mask buffers older files carry, and a tied head's copy of the embedding.
  return name.endswith((".attn.bias", ".attn.masked_bias")) or name == "lm_head.weight"


def _rename(name: str) -> str:
  return name.removeprefix("transformer.")


def roles(hf: dict, tokenizer_config: dict, vocab_by_id: dict) -> dict:
  del tokenizer_config
  eos = layout.role_token(vocab_by_id, hf.get("eos_token_id", 50256), "eos_token_id")
  return {"mask": eos, "bos": eos, "eos": eos, "pad": eos, "stop": []}


def hf_config(config, rows: int, ids: dict) -> dict:
  m = config.model
  return {
      "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": m.width,
      "n_head": m.heads, "n_layer": m.depth, "n_inner": m.mlp_dim or int(m.mlp_ratio * m.width),
      "n_positions": m.max_positions, "n_ctx": m.max_positions, "vocab_size": rows,
      "layer_norm_epsilon": m.norm_eps, "activation_function": "gelu_new",
      "scale_attn_weights": True, "tie_word_embeddings": True, "bos_token_id": ids["bos"],
      "eos_token_id": ids["eos"], "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
      "torch_dtype": m.param_dtype,
  }


def _expressible(config) -> str:
  m = config.model
  if m.family != "autoregressive":
    return "GPT-2's layout holds autoregressive models"
  for key, want in (("norm", "layer"), ("norm_bias", True), ("mlp", "gelu"),
                    ("mlp_bias", True), ("qkv_bias", True), ("attn_out_bias", True),
                    ("positions", "learned"), ("tie_embeddings", True),
                    ("tied_head_scale", 1.0), ("head_bias", False), ("kv_heads", 0),
                    ("lora_rank", 0)):
    if m[key] != want:
      return f"GPT-2's layout needs model.{key}={want!r} (this model has {m[key]!r})"
  return ""


ARCH = layout.Arch("gpt2", ("gpt2",), config, tensors, roles, ignored=_ignored, rename=_rename,
                   hf_config=hf_config, expressible=_expressible)
