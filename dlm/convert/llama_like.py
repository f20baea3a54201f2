"""The tensors of a Llama-shaped block stack (RMSNorm, rotary, SwiGLU, no biases but
optionally on q/k/v), under each release's own names: LLaDA (`modeling_llada.py`, OLMo's
names) and Dream (`modeling_dream.py`, Qwen2's names) differ only in those and in a few
settings."""

from __future__ import annotations

from dlm.convert.layout import Tensor

_ALL = slice(None)


def masked_config(shape: dict, rope_theta: float, norm_eps: float, qkv_bias: bool,
                  context: int, **extra) -> dict:
  """The dlm config keys of a Llama-shaped bidirectional masked model without time input;
  `shape` has d, depth, heads, kv_heads, hidden, rows and tied."""
  s = shape
  return {
      "model.family": "masked", "model.width": s["d"], "model.depth": s["depth"],
      "model.heads": s["heads"], "model.kv_heads": 0 if s["kv_heads"] == s["heads"]
      else s["kv_heads"], "model.mlp_dim": s["hidden"], "model.vocab_size": s["rows"],
      "model.time_conditioning": "none", "model.rope_theta": float(rope_theta),
      "model.norm_eps": float(norm_eps), "model.qkv_bias": qkv_bias, "model.head_bias": False,
      "model.tie_embeddings": s["tied"], "model.tied_head_scale": 1.0, "context": context,
      **extra}


def block_tensors(names: dict, i: int, d: int, heads: int, kv_heads: int, head_dim: int,
                  hidden: int, qkv_bias: bool) -> list[Tensor]:
  """Block i's tensors; `names` maps q, k, v, o, gate, up, down, norm_attn, norm_mlp to HF
  names with `{i}` for the layer."""
  n = {k: v.format(i=i) for k, v in names.items()}
  at, mlp = f"net/blocks/{i}/attn", f"net/blocks/{i}/mlp"
  q, kv = heads * head_dim, kv_heads * head_dim
  fused = kv_heads == heads
  qkv = [(n["q"], q, f"{at}/wqkv" if fused else f"{at}/wq", (_ALL, 0) if fused else ()),
         (n["k"], kv, f"{at}/wqkv" if fused else f"{at}/wkv", (_ALL, 1) if fused else (_ALL, 0)),
         (n["v"], kv, f"{at}/wqkv" if fused else f"{at}/wkv", (_ALL, 2) if fused else (_ALL, 1))]
  out = [Tensor(f"{name}.weight", (rows, d), path, index, linear=True)
         for name, rows, path, index in qkv]
  if qkv_bias:
    out += [Tensor(f"{name}.bias", (rows,), path.replace("/w", "/b", 1), index[1:])
            for name, rows, path, index in qkv]
  return out + [
      Tensor(f"{n['o']}.weight", (d, q), f"{at}/wo", linear=True),
      Tensor(f"{n['gate']}.weight", (hidden, d), f"{mlp}/w_in", (_ALL, 0), linear=True),
      Tensor(f"{n['up']}.weight", (hidden, d), f"{mlp}/w_in", (_ALL, 1), linear=True),
      Tensor(f"{n['down']}.weight", (d, hidden), f"{mlp}/w_down", linear=True),
      Tensor(f"{n['norm_attn']}.weight", (d,), f"net/blocks/{i}/norm_attn/scale"),
      Tensor(f"{n['norm_mlp']}.weight", (d,), f"net/blocks/{i}/norm_mlp/scale"),
  ]
