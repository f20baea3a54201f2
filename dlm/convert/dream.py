"""Dream (Ye et al. 2025; Dream-org/Dream-v0-Base-7B and -Instruct-7B): a Qwen2.5-shaped
masked diffusion model (`modeling_dream.py`: grouped-query attention, biases on q/k/v, rotate_half
rotary, untied head) whose output at position i predicts token i + 1 (Dream's generation code
shifts the logits right by one: `logits = cat([logits[:, :1], logits[:, :-1]])`; here
`model.shift_logits`). Converted to the `masked` family without time input."""

from __future__ import annotations

import os

from dlm.convert import layout
from dlm.convert.layout import Tensor
from dlm.convert import llama_like
from dlm.convert.llama_like import block_tensors

_NAMES = {k: f"model.layers.{{i}}.{v}" for k, v in dict(
    q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj", o="self_attn.o_proj",
    gate="mlp.gate_proj", up="mlp.up_proj", down="mlp.down_proj",
    norm_attn="input_layernorm", norm_mlp="post_attention_layernorm").items()}


def _shape(hf: dict) -> dict:
  heads = layout.get(hf, "num_attention_heads")
  return dict(d=layout.get(hf, "hidden_size"), heads=heads,
              kv_heads=layout.get(hf, "num_key_value_heads", default=heads),
              hidden=layout.get(hf, "intermediate_size"), rows=layout.get(hf, "vocab_size"),
              depth=layout.get(hf, "num_hidden_layers"),
              tied=bool(hf.get("tie_word_embeddings", False)))


def config(hf: dict) -> dict:
  layout.refuse(hf, "hidden_act", "silu", "an activation other than SiLU (SwiGLU)")
  layout.refuse(hf, "rope_scaling", None, "rotary scaling")
  layout.refuse(hf, "use_sliding_window", False, "sliding-window attention")
  return llama_like.masked_config(
      _shape(hf), hf.get("rope_theta", 1e4), hf.get("rms_norm_eps", 1e-6), qkv_bias=True,
      context=layout.get(hf, "max_position_embeddings", default=2048),
      **{"model.shift_logits": True})


def tensors(hf: dict) -> list[Tensor]:
  s = _shape(hf)
  out = [Tensor("model.embed_tokens.weight", (s["rows"], s["d"]), "net/embed"),
         Tensor("model.norm.weight", (s["d"],), "net/norm_out/scale")]
  if not s["tied"]:
    out.append(Tensor("lm_head.weight", (s["rows"], s["d"]), "net/unembed", linear=True))
  for i in range(s["depth"]):
    out += block_tensors(_NAMES, i, s["d"], s["heads"], s["kv_heads"], s["d"] // s["heads"],
                         s["hidden"], qkv_bias=True)
  return out


def _ignored(name: str) -> bool:
  return name.endswith("rotary_emb.inv_freq")


def roles(hf: dict, tokenizer_config: dict, vocab_by_id: dict) -> dict:
  return layout.id_roles(hf, tokenizer_config, vocab_by_id, ("<|im_end|>",))


# Qwen2's pre-tokenizer split (transformers' `Qwen2Converter`, the tokenizer.json Qwen2.5 ships).
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def tokenizer(directory: str, tokenizer_config: dict):
  """Dream's released repos ship its tokenizer as `vocab.json` + `merges.txt` with the added
  tokens in tokenizer_config.json (`DreamTokenizer`, Qwen2's slow tokenizer), not as a
  tokenizer.json: the same byte-level BPE built with `tokenizers` (NFC, Qwen2's split, byte-level
  without its own regex, the added tokens at their ids). None if those files are absent."""
  import tokenizers  # pylint: disable=g-import-not-at-top
  from tokenizers import decoders, models, normalizers, pre_tokenizers

  vocab, merges = os.path.join(directory, "vocab.json"), os.path.join(directory, "merges.txt")
  if not (os.path.isfile(vocab) and os.path.isfile(merges)):
    return None
  hf = tokenizers.Tokenizer(models.BPE.from_file(vocab, merges, fuse_unk=False))
  hf.normalizer = normalizers.NFC()
  hf.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(tokenizers.Regex(_QWEN2_SPLIT), behavior="isolated"),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  hf.decoder = decoders.ByteLevel()
  added = tokenizer_config.get("added_tokens_decoder", {})
  for token_id in sorted(added, key=int):
    entry = added[token_id]
    if hf.token_to_id(entry["content"]) is not None:
      continue
    token = tokenizers.AddedToken(entry["content"], special=entry.get("special", True),
                                  normalized=entry.get("normalized", False))
    hf.add_special_tokens([token]) if entry.get("special", True) else hf.add_tokens([token])
    if hf.token_to_id(entry["content"]) != int(token_id):
      return None  # gaps in the ids: not this layout
  return hf


ARCH = layout.Arch("dream", ("Dream", "dream"), config, tensors, roles, ignored=_ignored,
                   tokenizer=tokenizer)
