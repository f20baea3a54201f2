#!/usr/bin/env python3
"""Builds tests/data/hf/<arch>/: tiny random checkpoints in the released Hugging Face
layouts of LLaDA-8B-Instruct, Dream-v0-Instruct-7B, gpt2-large and kuleshov-group/mdlm-owt,
with golden logits from the official PyTorch modeling code.

This script is NOT part of dlm and never runs in its tests or CI: it needs torch and
transformers, which must never be installed into the dlm virtualenv.  The generated
files are committed; the tests only read them.

Regenerate (one-off, outside the repo's venv)
---------------------------------------------
    python3.11 -m venv /tmp/golden-venv
    /tmp/golden-venv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
        # (used: the torch-2.13.0+cpu cp311 manylinux wheel; any CPU torch >= 2.4 works)
    /tmp/golden-venv/bin/pip install transformers==4.46.3 tokenizers==0.20.3 \
        safetensors==0.8.0 jinja2==3.1.6 numpy==2.4.6 einops==0.8.2 omegaconf==2.4.0 \
        huggingface_hub==0.36.2 filelock==3.16.1
    /tmp/golden-venv/bin/python tests/data/make_hf_golden.py --official-dir /tmp/official
    # --out DIR (default tests/data/hf), --arch llada dream gpt2 mdlm (default all)

Versions used for the committed files: Python 3.11.7, torch 2.13.0+cpu, transformers
4.46.3 (the version the LLaDA/Dream remote code was written for: their configs say
4.46.2/4.46.3), tokenizers 0.20.3, safetensors 0.8.0, jinja2 3.1.6, numpy 2.4.6,
einops 0.8.2, omegaconf 2.4.0, huggingface_hub 0.36.2.  One CPU thread; fixed seeds.
Rerunning on the same machine reproduces every byte; other CPUs may move the logits in
the last float32 bits (compare with rtol/atol ~1e-5).

--official-dir must hold the official model code (never copied into the repo; the
script copies it into a temporary package at run time):

    llada/modeling_llada.py, llada/configuration_llada.py
        GSAI-ML/LLaDA-8B-Instruct's remote code, current revision (with the 2025-10-21
        commit 852152c "Supports the input of attention mask").  The hub was not
        reachable here, so the files were taken from GitHub snapshots of that HF repo:
        configuration_llada.py verbatim from radi-cho/reasoning-diffusion@49e3510
        (LLaDA-8B-Instruct/configuration_llada.py; identical to the copies in
        yinj66/support_basis and ZHZisZZ/dllm up to their own additions);
        modeling_llada.py = yinj66/support_basis@66e6761
        ("LLaDA-8B-Instruct-B&S-light/modeling_llada.py", a Feb-2026 snapshot of the hub
        file) with that repo's own Chebyshev-softmax experiment removed again (its
        `import numpy`, the helper functions inside `_scaled_dot_product_attention` and
        the approximate-softmax body, restored to the hub's
        `F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
        dropout_p=dropout_p, is_causal=False)`).  Cross-checked: it differs from the
        pre-October hub file (radi-cho@49e3510 minus that repo's mask_head/generate
        additions) by exactly the +18/-5 lines of the hub commit 852152c, and from
        ZHZisZZ/dllm's vendored copy only by that repo's own PreTrainedModel wrapper.
    dream/modeling_dream.py, configuration_dream.py, generation_utils.py,
    tokenization_dream.py
        Dream-org/Dream-v0-Instruct-7B's remote code, verbatim from the snapshot in
        monash-yann/dllm-research@db71702 (models/Dream-7B-Instruct/); modeling_dream.py
        equals ZHZisZZ/dllm's vendored copy minus that repo's attention-mask additions,
        configuration_dream.py equals zhaoyMa/Saber's copy.
    mdlm/dit.py
        kuleshov-group/mdlm@c112c52 models/dit.py (the official DiT backbone; the
        hub's modeling_mdlm.py, 13.8 kB, is a thin HF wrapper around the same DIT as
        `DITBackbone` and could not be found verbatim anywhere).
    mdlm/configuration_mdlm.py
        kuleshov-group/mdlm-owt's configuration_mdlm.py (740 bytes, the hub file's exact
        size; found verbatim in the code index).

sha256 of the files used are in OFFICIAL_SHA256 below; pass --allow-unverified to run
with other revisions (e.g. freshly downloaded hub files).

Modifications to the official code (all at run time, in the temporary copy)
-------------------------------------------------------------------------------
LLaDA, Dream: none.  Both run on CPU as they are (LLaDA's flash-attn path is only taken
when config.flash_attention is true, which it is not; its
torch.backends.cuda.enable_*_sdp calls only set flags; Dream dispatches to
DreamSdpaAttention, plain torch SDPA with is_causal=False).  The packages are imported
directly (relative imports intact) instead of through trust_remote_code, and the
checkpoints are read with <Class>.from_pretrained(<fixture dir>) (strict: no missing,
unexpected or mismatched key, every stored tensor compared with the loaded parameter).
Dream's own DreamModel.from_pretrained override cannot return loading info, so
strictness is checked with PreTrainedModel.from_pretrained on DreamModel and the logits
come from the official override.  Dream's AutoTokenizer is loaded from a temporary
copy of the fixture plus tokenization_dream.py (auto_map needs the file beside it).
MDLM dit.py, each a plain-torch stand-in for a CUDA-only call:
  1. `import flash_attn`, `import flash_attn.layers.rotary` removed.
  2. `flash_attn.layers.rotary.apply_rotary_emb_qkv_(qkv, cos, sin)` ->
     `_rotary_qkv_torch(qkv, cos, sin)`: flash-attn's non-interleaved (GPT-NeoX,
     half-split) rotary on q and k of the packed (b, s, 3, h, d) tensor, v untouched:
     out = [x1*cos - x2*sin, x2*cos + x1*sin] with x1 = x[..., :d/2], x2 = x[..., d/2:].
  3. `flash_attn.flash_attn_interface.flash_attn_varlen_qkvpacked_func(qkv, cu_seqlens,
     seq_len, 0., causal=False)` -> `_varlen_attention_torch(...)`: per-sequence
     torch SDPA, non-causal, softmax scale 1/sqrt(head_dim), no dropout.
  4. `torch.cuda.amp.autocast(enabled=False)` and
     `torch.cuda.amp.autocast(dtype=torch.bfloat16)` -> `contextlib.nullcontext()`:
     everything runs in float32 (the released model runs its blocks in bf16 on GPU).
  The HF wrapper `MDLM` around `DIT` (below) follows the hub's modeling_mdlm.py as
  described by copies of it: attribute `backbone`, base_model_prefix "mdlm", forward
  (input_ids, timesteps) and `DITBackbone`'s
  `if not config.time_conditioning: sigma = zeros_like(sigma)`.

Every golden is also recomputed by a small independent functional reference written
in this file (straight from the checkpoint tensors) and must agree to 2e-5.

What is real and what is not
----------------------------
config.json: exactly the key set (and key order) of the released files, small values:
    LLaDA-8B-Instruct (hub commit 6059b30, 54 lines; same in yinj66/support_basis,
    monash-yann/dllm-research); Dream-v0-Instruct-7B (monash-yann/dllm-research
    snapshot, with its "_name_or_path"); gpt2-large (hub config.json of 2021-09-08,
    666 bytes, as shown on the hub); mdlm-owt (hub config.json, 489 bytes, as shown on
    the hub).  torch_dtype is "float32" where the real file has the key (Dream's real
    value is "bfloat16"), because the fixture weights are float32.
Weights: float32, the released tensor names and shapes, sharded into two files for
    every arch (the released gpt2-large and mdlm-owt have one model.safetensors; the
    fixtures are sharded anyway so the index path is always exercised).
    gpt2: keys WITHOUT the "transformer." prefix, no lm_head.weight (tied to
    wte.weight) and WITH the causal-mask buffers h.<i>.attn.bias [1, 1, n_ctx, n_ctx]
    (tril of ones, float32), as in the hub's model.safetensors (converted from the
    2019 pytorch_model.bin; no masked_bias).  mdlm: includes the persistent buffer
    backbone.rotary_emb.inv_freq [head_dim/2] (the hub loads strictly into a module
    that registers it).
Tokenizers: tiny byte-level BPEs trained here on CORPUS, with the real special tokens in
    the real order and roles.  LLaDA: the real tokenizer_config/special_tokens_map/
    generation_config contents and chat_template verbatim, ids shifted; only 16 of its
    269 added tokens are kept (the 252 <|reserved_token_*|> are cut to two); the real
    tokenizer.json (6.1 MB) could not be read, so its normalizer/pre-tokenizer are
    unknown - a GPT-2 style ByteLevel pre-tokenizer is used.  Dream: the real files are
    vocab.json + merges.txt + added_tokens.json + tokenization_dream.py (slow
    DreamTokenizer, auto_map in tokenizer_config.json) and there is NO tokenizer.json;
    the fixture has those files (except the .py) plus a tokenizer.json with Qwen2's
    pipeline (NFC, Qwen2 split regex, ByteLevel) that encodes identically (checked).
    gpt2: tokenizer.json/vocab.json/merges.txt/generation_config.json as in the hub
    repo; gpt2-large ships no tokenizer_config.json - the fixture's is gpt2's
    {"model_max_length": 1024}.  mdlm-owt ships no tokenizer at all (it uses "gpt2"
    and appends the mask as id = len(gpt2) = 50257): the fixture adds a GPT-2 style
    tokenizer with "[MASK]" appended last and a tokenizer_config naming
    GPT2TokenizerFast.
Goldens (golden.npz): `tokens` int32 (2, 16); `logits` float32 (2, 16, vocab) = the raw
    model output in float32: LLaDA LLaDAModelLM logits (bidirectional, no attention
    mask), Dream DreamModel logits = raw lm_head output, NOT shifted (bidirectional),
    gpt2 GPT2LMHeadModel logits (causal), mdlm the DIT backbone output before the subs
    parameterization at sigma = `sigma` (time path active) and `logits_sigma0` at
    sigma = 0, which is what the released model computes for ANY sigma because its
    config has time_conditioning=false.  golden.json: chat/chat_ids (llada, dream),
    text/ids (AutoTokenizer, add_special_tokens=False), special ids, notes.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import io
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
SEED = 20240607
HIDDEN, LAYERS, HEADS = 64, 2, 4

OFFICIAL_SHA256 = {
    "llada/modeling_llada.py": "2df91da8228f9e189f5e9d5591fe3daf1766d9e2c47667aa8f4e68b3f6bd8a3f",
    "llada/configuration_llada.py": "c947a64d8b735affa69d5adeb416c83ce607c8925270884e4471ae11068e2bfe",
    "dream/modeling_dream.py": "3166e789f0d69beb1f4fbdee2317953d1c1c3b9bc21479b109afc5dd059de5b3",
    "dream/configuration_dream.py": "24d038962ccf16361595494461000ec0c1b043653c7494d7fc835c96f121f0b9",
    "dream/generation_utils.py": "7f8ad01484898946b3c9c9d5ebc85e5ac726061d0fa7b4a522c4b8110c13a921",
    "dream/tokenization_dream.py": "1d7f04104fa673831f48256e3cd42cd0bbd1bddd801b4abea5c74cc47d98bdd2",
    "mdlm/dit.py": "58751fa6fe0ee555debc86b91995754bf34e818c076efbe0f0a102bee6899fa4",
    "mdlm/configuration_mdlm.py": "0b1fe1d01c0ca375e1b24e06926a78e436b465b12448749cfbaa76318499cec2",
}

CORPUS = [
    "Beautiful is better than ugly. Explicit is better than implicit.",
    "Simple is better than complex. Complex is better than complicated.",
    "Flat is better than nested. Sparse is better than dense. Readability counts.",
    "Special cases aren't special enough to break the rules, although practicality beats purity.",
    "Errors should never pass silently, unless explicitly silenced.",
    "In the face of ambiguity, refuse the temptation to guess.",
    "There should be one-- and preferably only one --obvious way to do it.",
    "Now is better than never. Although never is often better than *right* now.",
    "If the implementation is hard to explain, it's a bad idea.",
    "Namespaces are one honking great idea -- let's do more of those!",
    "A diffusion language model denoises masked tokens in parallel, step by step.",
    "The model sees the whole sequence at once: every position attends to every other.",
    "You are a helpful assistant. The user asks a question and the assistant answers it.",
    "system user assistant: Say hi. Hello there! How are you today? I am fine, thanks.",
    "def forward(self, input_ids, attention_mask=None):\n    return self.lm_head(hidden)\n",
    "for i in range(10):\n    print(i, i * i, 3.14159, 2 ** 16)\n",
    "The quick brown fox jumps over the lazy dog 1234567890 times.",
    "Tokens, logits, weights and shards: the converter maps each tensor by its name.",
]
SAMPLE_TEXT = "Hello world! The model denoises masked tokens in parallel, 42 times.\n  def f(x): return x"
CHAT_MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hi."}]

# Qwen2 / DreamTokenizer pre-tokenization regex (tokenization_dream.PRETOKENIZE_REGEX).
QWEN2_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
                 r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")

# ---------------------------------------------------------------- vocabularies
LLADA_REGULAR = 300          # real: 126080 regular tokens, then the added ones
LLADA_ADDED = [              # (content, special) in the real id order (126080 ...)
    ("<|startoftext|>", True), ("<|endoftext|>", True), ("[CLS]", True), ("[gMASK]", True),
    ("<|reserved_token_0|>", True), ("<|reserved_token_1|>", True),   # real: 0..251
    ("<|mdm_mask|>", True),                                           # real: 126336
    ("<role>", True), ("</role>", True), ("<|arithmetic_start|>", True),
    ("<|arithmetic_end|>", True), ("<|number_start|>", True), ("<|number_end|>", True),
    ("<|start_header_id|>", True), ("<|end_header_id|>", True), ("<|eot_id|>", True),
]
LLADA_VOCAB = 320            # config vocab_size == embedding_size (real: 126464, rows past 126348 unused)

DREAM_REGULAR = 296          # real: 151643 regular Qwen2.5 tokens
DREAM_ADDED = [              # real ids 151643 ... 151666
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True),
    ("<|box_end|>", True), ("<|quad_start|>", True), ("<|quad_end|>", True),
    ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False),
    ("</tool_call>", False), ("<|fim_prefix|>", False), ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False), ("<|fim_pad|>", False), ("<|repo_name|>", False),
    ("<|file_sep|>", False), ("<|beginoftext|>", True), ("<|mask|>", True),
]
DREAM_VOCAB = 336            # real: 152064 (rows past 151666 unused)

GPT2_REGULAR = 300           # real: 50256 regular + <|endoftext|> = 50257
MDLM_REGULAR = 300           # real: gpt2's 50257 + [MASK] = 50258

LLADA_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}")

DREAM_CHAT_TEMPLATE = (
    "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n    {%- else %}\n        {{- 'You are a helpful assistant.' }}\n"
    "    {%- endif %}\n    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user "
    "query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n        {{- \"\\n\" }}\n        {{- tool | tojson }}\n    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": "
    "<args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n{%- else %}\n    {%- if messages[0]['role'] == "
    "'system' %}\n        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "    {%- else %}\n        {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n{%- endif %}\n{%- for message in messages %}\n    {%- if (message.role == \"user\") or "
    "(message.role == \"system\" and not loop.first) or (message.role == \"assistant\" and not "
    "message.tool_calls) %}\n        {{- '<|im_start|>' + message.role + '\\n' + message.content + "
    "'<|im_end|>' + '\\n' }}\n    {%- elif message.role == \"assistant\" %}\n        {{- '<|im_start|>' + "
    "message.role }}\n        {%- if message.content %}\n            {{- '\\n' + message.content }}\n"
    "        {%- endif %}\n        {%- for tool_call in message.tool_calls %}\n            {%- if "
    "tool_call.function is defined %}\n                {%- set tool_call = tool_call.function %}\n"
    "            {%- endif %}\n            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n            {{- "
    "tool_call.name }}\n            {{- '\", \"arguments\": ' }}\n            {{- tool_call.arguments | "
    "tojson }}\n            {{- '}\\n</tool_call>' }}\n        {%- endfor %}\n        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1]"
    ".role != \"tool\") %}\n            {{- '<|im_start|>user' }}\n        {%- endif %}\n        {{- "
    "'\\n<tool_response>\\n' }}\n        {{- message.content }}\n        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n            {{- "
    "'<|im_end|>\\n' }}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt "
    "%}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n")
# sha256 of the real chat_template strings (LLaDA-8B-Instruct / Dream-v0-Instruct-7B tokenizer_config.json)
CHAT_TEMPLATE_SHA256 = {"llada": "b48c47f6443892716176eb200bf4ef108f64e06ca26ed0fa8ebc0a4b3992fcb2",
                        "dream": "44d5f08f3f72b837eaad09f13a54c1f9f4eb58d75240334548b7fd52a5437fa5"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def config_kwargs(config: dict) -> dict:
    return {k: v for k, v in config.items() if k != "model_type"}


def write_json(path: Path, obj, indent=2, flat_lists=False) -> None:
    text = json.dumps(obj, indent=indent, ensure_ascii=False)
    if flat_lists:   # keep lists of ints on one line
        import re
        text = re.sub(r"\[\s*(-?\d+(?:,\s*-?\d+)*)\s*\]", lambda m: "[" + ", ".join(m.group(1).split()).replace(",,", ",") + "]", text)
    path.write_text(text + "\n")


# ---------------------------------------------------------------- tokenizers
def train_bpe(n_regular: int, style: str):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    if style == "qwen2":
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
        tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
        tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    else:  # GPT-2's tokenizer.json pipeline
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
        tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
        tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=n_regular, min_frequency=1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(CORPUS, trainer=trainer)
    assert tok.get_vocab_size() == n_regular, (tok.get_vocab_size(), n_regular)
    return tok


def add_tokens(tok, added) -> dict[str, int]:
    from tokenizers import AddedToken

    ids = {}
    for content, special in added:
        expected = tok.get_vocab_size(with_added_tokens=True)
        t = AddedToken(content, single_word=False, lstrip=False, rstrip=False, normalized=False, special=special)
        (tok.add_special_tokens if special else tok.add_tokens)([t])
        ids[content] = tok.token_to_id(content)
        assert ids[content] == expected, (content, ids[content], expected)
    return ids


def added_decoder(ids: dict[str, int], added) -> dict[str, dict]:
    special = dict(added)
    return {str(ids[c]): {"content": c, "lstrip": False, "normalized": False, "rstrip": False,
                          "single_word": False, "special": special[c]} for c, _ in added}


def token_entry(content: str) -> dict:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}


# ---------------------------------------------------------------- weights
def random_tensor(name: str, shape, gen: torch.Generator) -> torch.Tensor:
    """Moderate-scale random values: norms ~1, biases and adaLN non-zero."""
    def n(*s):
        return torch.randn(*s, generator=gen, dtype=torch.float32)

    shape = tuple(shape)
    last = name.rsplit(".", 1)[-1]
    is_norm = any(k in name for k in ("norm", "ln_")) and not name.endswith("adaLN_modulation.weight")
    if is_norm and last == "weight":
        return 1.0 + 0.1 * n(*shape)
    if last == "bias" or len(shape) == 1:
        return (0.1 if "adaLN" in name else 0.05) * n(*shape)
    if "adaLN_modulation" in name:                   # (6|2)*hidden x cond: time path matters
        return 0.2 * n(*shape)
    if any(k in name for k in ("wte", "embed", "wpe", "vocab_embed")):
        return 0.25 * n(*shape)
    fan_in = shape[0] if name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")) else shape[1]
    return (0.8 / math.sqrt(fan_in)) * n(*shape)     # GPT-2 Conv1D weights are [in, out]


def save_sharded(out: Path, tensors: dict[str, torch.Tensor]) -> dict:
    from safetensors.torch import save_file

    names = sorted(tensors)
    sizes = [tensors[k].numel() * tensors[k].element_size() for k in names]
    total, acc, cut = sum(sizes), 0, len(names)
    for i, s in enumerate(sizes):
        if acc + s > total / 2 and i > 0:
            cut = i
            break
        acc += s
    files = {"model-00001-of-00002.safetensors": names[:cut], "model-00002-of-00002.safetensors": names[cut:]}
    weight_map = {}
    for fname, keys in files.items():
        assert keys
        save_file({k: tensors[k].contiguous() for k in keys}, str(out / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in keys})
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    write_json(out / "model.safetensors.index.json", index)
    return index


def load_sharded(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = json.loads((out / "model.safetensors.index.json").read_text())
    sd = {}
    for fname in sorted(set(index["weight_map"].values())):
        sd.update(load_file(str(out / fname)))
    assert set(sd) == set(index["weight_map"])
    return sd


def check_loaded(model, info, files: dict[str, torch.Tensor], rename=lambda k: k, ignore=(), tied=()) -> None:
    """Strict: nothing missing, unexpected or mismatched, and every tensor really landed."""
    assert not info["missing_keys"], info["missing_keys"]
    assert not info["unexpected_keys"], info["unexpected_keys"]
    assert not info["mismatched_keys"], info["mismatched_keys"]
    state = model.state_dict()
    for k, v in files.items():
        if k in ignore:
            continue
        got = state[rename(k)]
        assert got.shape == v.shape and torch.equal(got, v), k
    covered = {rename(k) for k in files if k not in ignore}
    leftover = set(state) - covered - set(tied)
    assert not leftover, leftover


# ---------------------------------------------------------------- official code
def import_official(official: Path, sub: str, package: str, tmp: Path, patch=None):
    pkg = tmp / package
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for f in sorted((official / sub).glob("*.py")):
        src = f.read_text()
        if patch is not None:
            src = patch(f.name, src)
        (pkg / f.name).write_text(src)
    if str(tmp) not in sys.path:
        sys.path.insert(0, str(tmp))
    return pkg


MDLM_TORCH_STANDINS = '''
import contextlib as _contextlib


def _rotary_qkv_torch(qkv, cos, sin):
  """flash_attn.layers.rotary.apply_rotary_emb_qkv_ (interleaved=False) in torch:
  rotates q and k of qkv (b, s, 3, h, d) by half-split pairs; v untouched."""
  d2 = cos.shape[-1]
  cos = cos[None, :, None, :]
  sin = sin[None, :, None, :]
  out = qkv.clone()
  for i in (0, 1):
    x1, x2 = qkv[:, :, i, :, :d2], qkv[:, :, i, :, d2:2 * d2]
    out[:, :, i, :, :d2] = x1 * cos - x2 * sin
    out[:, :, i, :, d2:2 * d2] = x2 * cos + x1 * sin
  return out


def _varlen_attention_torch(qkv, cu_seqlens, max_seqlen, dropout_p, causal=False):
  """flash_attn_varlen_qkvpacked_func in torch: qkv ((b s), 3, h, d) -> ((b s), h, d)."""
  assert dropout_p == 0.0
  outs = []
  for lo, hi in zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist()):
    q, k, v = (qkv[lo:hi, i].transpose(0, 1)[None] for i in range(3))
    o = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
    outs.append(o[0].transpose(0, 1))
  return torch.cat(outs, 0)
'''


def patch_dit(name: str, src: str) -> str:
    if name != "dit.py":
        return src
    edits = [
        ("import flash_attn\nimport flash_attn.layers.rotary\n", ""),
        ("  return flash_attn.layers.rotary.apply_rotary_emb_qkv_(qkv, cos, sin)",
         "  return _rotary_qkv_torch(qkv, cos, sin)"),
        ("flash_attn.flash_attn_interface.flash_attn_varlen_qkvpacked_func(",
         "_varlen_attention_torch("),
        ("torch.cuda.amp.autocast(enabled=False)", "_contextlib.nullcontext()"),
        ("torch.cuda.amp.autocast(dtype=torch.bfloat16)", "_contextlib.nullcontext()"),
    ]
    for old, new in edits:
        count = src.count(old)
        assert count >= 1, f"dit.py patch target not found: {old!r}"
        src = src.replace(old, new)
    assert "flash_attn" not in src and "torch.cuda" not in src
    marker = "# Flags required to enable jit fusion kernels"
    assert src.count(marker) == 1
    return src.replace(marker, MDLM_TORCH_STANDINS + "\n\n" + marker)


# ---------------------------------------------------------------- functional references
def rms(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rope_halfsplit(x, theta, positions):
    d = x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    ang = positions[:, None].float() * inv[None]
    cos, sin = torch.cat([ang.cos(), ang.cos()], -1), torch.cat([ang.sin(), ang.sin()], -1)
    rot = torch.cat([-x[..., d // 2:], x[..., :d // 2]], -1)
    return x * cos + rot * sin


def attention(q, k, v, causal):
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def ref_llada(sd, cfg, ids):
    p = "model.transformer."
    x = sd[p + "wte.weight"][ids]
    B, T, _ = x.shape
    hd = cfg["d_model"] // cfg["n_heads"]
    pos = torch.arange(T)
    for i in range(cfg["n_layers"]):
        b = f"{p}blocks.{i}."
        h = rms(x, sd[b + "attn_norm.weight"], cfg["rms_norm_eps"])
        q = (h @ sd[b + "q_proj.weight"].T).view(B, T, -1, hd).transpose(1, 2)
        k = (h @ sd[b + "k_proj.weight"].T).view(B, T, -1, hd).transpose(1, 2)
        v = (h @ sd[b + "v_proj.weight"].T).view(B, T, -1, hd).transpose(1, 2)
        q, k = rope_halfsplit(q, cfg["rope_theta"], pos), rope_halfsplit(k, cfg["rope_theta"], pos)
        a = attention(q, k, v, causal=False).transpose(1, 2).reshape(B, T, -1)
        x = x + a @ sd[b + "attn_out.weight"].T
        h = rms(x, sd[b + "ff_norm.weight"], cfg["rms_norm_eps"])
        h = F.silu(h @ sd[b + "ff_proj.weight"].T) * (h @ sd[b + "up_proj.weight"].T)
        x = x + h @ sd[b + "ff_out.weight"].T
    x = rms(x, sd[p + "ln_f.weight"], cfg["rms_norm_eps"])
    return x @ sd[p + "ff_out.weight"].T


def ref_dream(sd, cfg, ids):
    x = sd["model.embed_tokens.weight"][ids]
    B, T, _ = x.shape
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg["hidden_size"] // nh
    pos = torch.arange(T)
    eps = cfg["rms_norm_eps"]
    for i in range(cfg["num_hidden_layers"]):
        b = f"model.layers.{i}."
        h = rms(x, sd[b + "input_layernorm.weight"], eps)
        proj = {n: h @ sd[f"{b}self_attn.{n}_proj.weight"].T + sd[f"{b}self_attn.{n}_proj.bias"] for n in "qkv"}
        q = proj["q"].view(B, T, nh, hd).transpose(1, 2)
        k = proj["k"].view(B, T, nkv, hd).transpose(1, 2).repeat_interleave(nh // nkv, dim=1)
        v = proj["v"].view(B, T, nkv, hd).transpose(1, 2).repeat_interleave(nh // nkv, dim=1)
        q, k = rope_halfsplit(q, cfg["rope_theta"], pos), rope_halfsplit(k, cfg["rope_theta"], pos)
        a = attention(q, k, v, causal=False).transpose(1, 2).reshape(B, T, -1)
        x = x + a @ sd[b + "self_attn.o_proj.weight"].T
        h = rms(x, sd[b + "post_attention_layernorm.weight"], eps)
        h = F.silu(h @ sd[b + "mlp.gate_proj.weight"].T) * (h @ sd[b + "mlp.up_proj.weight"].T)
        x = x + h @ sd[b + "mlp.down_proj.weight"].T
    return rms(x, sd["model.norm.weight"], eps) @ sd["lm_head.weight"].T


def ref_gpt2(sd, cfg, ids):
    B, T = ids.shape
    x = sd["wte.weight"][ids] + sd["wpe.weight"][torch.arange(T)]
    nh, eps = cfg["n_head"], cfg["layer_norm_epsilon"]

    def ln(x, p):
        return F.layer_norm(x, (x.shape[-1],), sd[p + ".weight"], sd[p + ".bias"], eps)

    def gelu_new(x):
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x.pow(3))))

    for i in range(cfg["n_layer"]):
        b = f"h.{i}."
        qkv = ln(x, b + "ln_1") @ sd[b + "attn.c_attn.weight"] + sd[b + "attn.c_attn.bias"]  # Conv1D: x @ W
        q, k, v = (t.view(B, T, nh, -1).transpose(1, 2) for t in qkv.split(x.shape[-1], -1))
        a = attention(q, k, v, causal=True).transpose(1, 2).reshape(B, T, -1)
        x = x + a @ sd[b + "attn.c_proj.weight"] + sd[b + "attn.c_proj.bias"]
        h = gelu_new(ln(x, b + "ln_2") @ sd[b + "mlp.c_fc.weight"] + sd[b + "mlp.c_fc.bias"])
        x = x + h @ sd[b + "mlp.c_proj.weight"] + sd[b + "mlp.c_proj.bias"]
    return ln(x, "ln_f") @ sd["wte.weight"].T


def ref_mdlm(sd, cfg, ids, sigma):
    p = "backbone."
    B, T = ids.shape
    nh = cfg["n_heads"]
    half = 128                                   # frequency_embedding_size 256
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = sigma[:, None].float() * freqs[None]
    temb = torch.cat([torch.cos(args), torch.sin(args)], -1)
    c = F.silu(temb @ sd[p + "sigma_map.mlp.0.weight"].T + sd[p + "sigma_map.mlp.0.bias"])
    c = F.silu(c @ sd[p + "sigma_map.mlp.2.weight"].T + sd[p + "sigma_map.mlp.2.bias"])

    def ln(x, w):
        return F.layer_norm(x, (x.shape[-1],)) * w

    x = sd[p + "vocab_embed.embedding"][ids]
    hd = x.shape[-1] // nh
    pos = torch.arange(T)
    for i in range(cfg["n_blocks"]):
        b = f"{p}blocks.{i}."
        mod = c @ sd[b + "adaLN_modulation.weight"].T + sd[b + "adaLN_modulation.bias"]
        sh1, sc1, g1, sh2, sc2, g2 = (m[:, None] for m in mod.chunk(6, -1))
        h = ln(x, sd[b + "norm1.weight"]) * (1 + sc1) + sh1
        qkv = (h @ sd[b + "attn_qkv.weight"].T).view(B, T, 3, nh, hd)
        q, k, v = (qkv[:, :, j].transpose(1, 2) for j in range(3))
        q, k = rope_halfsplit(q, 10000.0, pos), rope_halfsplit(k, 10000.0, pos)
        a = attention(q, k, v, causal=False).transpose(1, 2).reshape(B, T, -1)
        x = x + g1 * (a @ sd[b + "attn_out.weight"].T)
        h = ln(x, sd[b + "norm2.weight"]) * (1 + sc2) + sh2
        h = F.gelu(h @ sd[b + "mlp.0.weight"].T + sd[b + "mlp.0.bias"], approximate="tanh")
        x = x + g2 * (h @ sd[b + "mlp.2.weight"].T + sd[b + "mlp.2.bias"])
    mod = c @ sd[p + "output_layer.adaLN_modulation.weight"].T + sd[p + "output_layer.adaLN_modulation.bias"]
    shift, scale = (m[:, None] for m in mod.chunk(2, -1))
    h = ln(x, sd[p + "output_layer.norm_final.weight"]) * (1 + scale) + shift
    return h @ sd[p + "output_layer.linear.weight"].T + sd[p + "output_layer.linear.bias"]


def assert_close(name, a, b, tol=2e-5):
    err = (a - b).abs().max().item()
    scale = b.abs().max().item()
    print(f"  {name}: max |official - reference| = {err:.2e} (max |logit| {scale:.2f}, std {b.std().item():.3f})")
    assert err <= tol * max(1.0, scale), (name, err)


# ---------------------------------------------------------------- tokens
def make_tokens(ids_text: list[int], n_regular: int, mask_id: int | None, extra: dict, rng) -> np.ndarray:
    assert len(ids_text) >= 16
    row0 = np.array(ids_text[:16], dtype=np.int32)
    row1 = rng.integers(0, n_regular, size=16).astype(np.int32)
    for pos, tid in extra.items():
        row1[pos] = tid
    if mask_id is not None:
        row0[[3, 7, 12]] = mask_id
        row1[[5, 6, 10, 15]] = mask_id
    return np.stack([row0, row1])


def tokenizer_checks(out: Path, tok_fast, auto_tok, text: str) -> list[int]:
    ids = auto_tok(text, add_special_tokens=False)["input_ids"]
    assert ids == tok_fast.encode(text, add_special_tokens=False).ids, "AutoTokenizer != tokenizer.json"
    assert auto_tok.decode(ids) == text
    return ids


# ---------------------------------------------------------------- builders
def build_llada(out: Path, official: Path, tmp: Path) -> None:
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tok = train_bpe(LLADA_REGULAR, "gpt2")
    ids = add_tokens(tok, LLADA_ADDED)
    tok.save(str(out / "tokenizer.json"))
    bos, eos, mask = ids["<|startoftext|>"], ids["<|endoftext|>"], ids["<|mdm_mask|>"]

    config = {
        "activation_type": "silu", "alibi": False, "alibi_bias_max": 8.0, "architectures": ["LLaDAModelLM"],
        "attention_dropout": 0.0, "attention_layer_norm": False, "attention_layer_norm_with_affine": True,
        "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig",
                     "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
                     "AutoModel": "modeling_llada.LLaDAModelLM"},
        "bias_for_layer_norm": False, "block_group_size": 1, "block_type": "llama", "d_model": HIDDEN,
        "embedding_dropout": 0.0, "embedding_size": LLADA_VOCAB, "eos_token_id": eos, "flash_attention": False,
        "include_bias": False, "include_qkv_bias": False, "init_cutoff_factor": None, "init_device": "meta",
        "init_fn": "mitchell", "init_std": 0.02, "input_emb_norm": False, "layer_norm_type": "rms",
        "layer_norm_with_affine": True, "mask_token_id": mask, "max_sequence_length": 64,
        "mlp_hidden_size": 176, "mlp_ratio": 4, "model_type": "llada", "multi_query_attention": None,
        "n_heads": HEADS, "n_kv_heads": HEADS, "n_layers": LAYERS, "pad_token_id": eos,
        "precision": "amp_bf16", "residual_dropout": 0.0, "rms_norm_eps": 1e-05, "rope": True,
        "rope_full_precision": True, "rope_theta": 500000.0, "scale_logits": False,
        "transformers_version": "4.46.3", "use_cache": False, "vocab_size": LLADA_VOCAB, "weight_tying": False,
    }
    write_json(out / "config.json", config)
    write_json(out / "generation_config.json", {"_from_model_config": True, "bos_token_id": bos,
                                                "eos_token_id": eos, "transformers_version": "4.38.2"}, indent=4)
    additional = ["<role>", "</role>", "<|arithmetic_start|>", "<|arithmetic_end|>", "<|number_start|>",
                  "<|number_end|>"]
    write_json(out / "special_tokens_map.json", {
        "additional_special_tokens": additional, "bos_token": token_entry("<|startoftext|>"),
        "cls_token": token_entry("[CLS]"), "eos_token": token_entry("<|endoftext|>"),
        "pad_token": token_entry("<|endoftext|>")})
    write_json(out / "tokenizer_config.json", {
        "add_bos_token": False, "add_eos_token": False, "added_tokens_decoder": added_decoder(ids, LLADA_ADDED),
        "additional_special_tokens": additional, "bos_token": "<|startoftext|>",
        "chat_template": LLADA_CHAT_TEMPLATE, "clean_up_tokenization_spaces": False, "cls_token": "[CLS]",
        "eos_token": "<|endoftext|>", "fast_tokenizer": True, "gmask_token": "[gMASK]", "merges_file": None,
        "model_input_names": ["input_ids", "attention_mask"], "model_max_length": 1000000000000000019884624838656,
        "pad_token": "<|endoftext|>", "tokenizer_class": "PreTrainedTokenizerFast", "trust_remote_code": True,
        "vocab_file": None})

    import_official(official, "llada", "llada_official", tmp)
    cfgmod = importlib.import_module("llada_official.configuration_llada")
    modmod = importlib.import_module("llada_official.modeling_llada")
    torch.manual_seed(SEED)
    skeleton = modmod.LLaDAModelLM(cfgmod.LLaDAConfig(**config_kwargs(config)))
    gen = torch.Generator().manual_seed(SEED + 1)
    tensors = {k: random_tensor(k, v.shape, gen) for k, v in sorted(skeleton.state_dict().items())}
    del skeleton
    save_sharded(out, tensors)

    model, info = modmod.LLaDAModelLM.from_pretrained(str(out), output_loading_info=True)
    assert isinstance(model.config, cfgmod.LLaDAConfig)
    check_loaded(model, info, load_sharded(out))
    model.eval()

    auto = AutoTokenizer.from_pretrained(str(out))
    assert isinstance(auto, PreTrainedTokenizerFast)
    text_ids = tokenizer_checks(out, tok, auto, SAMPLE_TEXT)
    chat = auto.apply_chat_template(CHAT_MESSAGES, tokenize=False, add_generation_prompt=True)
    chat_ids = auto(chat, add_special_tokens=False)["input_ids"]
    rng = np.random.default_rng(SEED + 2)
    tokens = make_tokens(text_ids, LLADA_REGULAR, mask, {0: bos, 9: ids["<|eot_id|>"]}, rng)
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(tokens).long()).logits.float()
        ref = ref_llada(load_sharded(out), config, torch.from_numpy(tokens).long())
    assert_close("llada", logits, ref)
    np.savez(out / "golden.npz", tokens=tokens, logits=logits.numpy().astype(np.float32))
    special = {"bos": bos, "eos": eos, "pad": eos, "mask": mask, "eot": ids["<|eot_id|>"],
               "start_header": ids["<|start_header_id|>"], "end_header": ids["<|end_header_id|>"],
               "cls": ids["[CLS]"], "gmask": ids["[gMASK]"]}
    write_golden(out, "llada", text_ids, special, chat, chat_ids, CHAT_MESSAGES, len(auto), config["vocab_size"],
                 "bidirectional", "modeling_llada.LLaDAModelLM(input_ids).logits, no attention mask")


def build_dream(out: Path, official: Path, tmp: Path) -> None:
    from transformers import AutoTokenizer

    tok = train_bpe(DREAM_REGULAR, "qwen2")
    tok.model.save(str(out))                      # vocab.json, merges.txt (regular tokens only)
    ids = add_tokens(tok, DREAM_ADDED)
    tok.save(str(out / "tokenizer.json"))
    eot, mask, bos_tok = ids["<|endoftext|>"], ids["<|mask|>"], ids["<|beginoftext|>"]
    write_json(out / "added_tokens.json", dict(sorted((c, ids[c]) for c, _ in DREAM_ADDED)))

    config = {
        "_name_or_path": "Dream-org/Dream-v0-Instruct-7B", "architectures": ["DreamModel"],
        "attention_dropout": 0.0,
        "auto_map": {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
        "bos_token_id": eot, "eos_token_id": eot, "hidden_act": "silu", "hidden_size": HIDDEN,
        "initializer_range": 0.02, "intermediate_size": 176, "mask_token_id": mask,
        "max_position_embeddings": 64, "max_window_layers": LAYERS, "model_type": "Dream",
        "num_attention_heads": HEADS, "num_hidden_layers": LAYERS, "num_key_value_heads": 2,
        "pad_token_id": eot, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000.0,
        "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "float32",
        "transformers_version": "4.46.2", "use_cache": True, "use_mrope": False, "use_sliding_window": False,
        "vocab_size": DREAM_VOCAB,
    }
    write_json(out / "config.json", config)
    write_json(out / "generation_config.json", {
        "_from_model_config": True, "alg": "origin", "alg_temp": None, "bos_token_id": eot, "eos_token_id": eot,
        "eps": 0.001, "mask_token_id": None, "output_history": False, "pad_token_id": eot, "steps": 512,
        "temperature": 0.0, "top_k": None, "top_p": None, "transformers_version": "4.46.2"})
    write_json(out / "special_tokens_map.json", {
        "additional_special_tokens": ["<|beginoftext|>", "<|mask|>"], "bos_token": token_entry("<|beginoftext|>"),
        "eos_token": token_entry("<|endoftext|>"), "mask_token": token_entry("<|mask|>"),
        "pad_token": token_entry("<|endoftext|>")})
    write_json(out / "tokenizer_config.json", {
        "add_bos_token": False, "add_prefix_space": False, "added_tokens_decoder": added_decoder(ids, DREAM_ADDED),
        "additional_special_tokens": ["<|beginoftext|>", "<|mask|>"],
        "auto_map": {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]}, "bos_token": "<|beginoftext|>",
        "chat_template": DREAM_CHAT_TEMPLATE, "clean_up_tokenization_spaces": False, "eos_token": "<|endoftext|>",
        "errors": "replace", "mask_token": "<|mask|>", "model_max_length": 131072, "pad_token": "<|endoftext|>",
        "split_special_tokens": False, "tokenizer_class": "DreamTokenizer", "unk_token": None})

    import_official(official, "dream", "dream_official", tmp)
    cfgmod = importlib.import_module("dream_official.configuration_dream")
    modmod = importlib.import_module("dream_official.modeling_dream")
    tokmod = importlib.import_module("dream_official.tokenization_dream")
    torch.manual_seed(SEED)
    skeleton = modmod.DreamModel(cfgmod.DreamConfig(**config_kwargs(config)))
    gen = torch.Generator().manual_seed(SEED + 11)
    tensors = {k: random_tensor(k, v.shape, gen) for k, v in sorted(skeleton.state_dict().items())}
    del skeleton
    save_sharded(out, tensors)

    # DreamModel.from_pretrained (official override that also loads DreamGenerationConfig)
    # cannot return loading info, so strictness is checked through the base-class loader
    # on the same class, and the logits come from the official entry point.
    from transformers import PreTrainedModel
    strict, info = PreTrainedModel.from_pretrained.__func__(modmod.DreamModel, str(out), output_loading_info=True)
    check_loaded(strict, info, load_sharded(out))
    model = modmod.DreamModel.from_pretrained(str(out))
    assert isinstance(model.config, cfgmod.DreamConfig)
    assert type(model.model.layers[0].self_attn).__name__ == "DreamSdpaAttention"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), strict.state_dict().values()))
    model.eval()

    # AutoTokenizer through the real remote-code path (auto_map -> DreamTokenizer) needs
    # tokenization_dream.py beside the files: use a temporary copy of the fixture.
    tcopy = tmp / "dream_tokenizer_copy"
    shutil.copytree(out, tcopy)
    shutil.copy(official / "dream" / "tokenization_dream.py", tcopy / "tokenization_dream.py")
    auto = AutoTokenizer.from_pretrained(str(tcopy), trust_remote_code=True)
    assert type(auto).__name__ == "DreamTokenizer", type(auto)
    direct = tokmod.DreamTokenizer.from_pretrained(str(out))
    text_ids = tokenizer_checks(out, tok, auto, SAMPLE_TEXT)
    assert direct(SAMPLE_TEXT, add_special_tokens=False)["input_ids"] == text_ids
    for probe in ["Hello  world\n\n\tTabs   and   spaces ", "I'm we'll they'd IT'S", "café naïve Ω ≈ 😀 日本語",
                  "x=1;y=22;z=333\r\n", "<|im_start|>user\nhi<|im_end|>", "<|mask|><|mask|> a<|mask|>b",
                  "   leading", "trailing   ", "e\u0301"]:   # slow DreamTokenizer == tokenizer.json
        assert auto(probe, add_special_tokens=False)["input_ids"] == tok.encode(probe, add_special_tokens=False).ids
    chat = auto.apply_chat_template(CHAT_MESSAGES, tokenize=False, add_generation_prompt=True)
    chat_ids = auto(chat, add_special_tokens=False)["input_ids"]
    assert chat_ids == tok.encode(chat, add_special_tokens=False).ids
    assert auto.mask_token_id == mask and auto.bos_token_id == bos_tok and auto.eos_token_id == eot
    rng = np.random.default_rng(SEED + 12)
    tokens = make_tokens(text_ids, DREAM_REGULAR, mask, {0: ids["<|im_start|>"], 9: ids["<|im_end|>"]}, rng)
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(tokens).long(), use_cache=False).logits.float()
        ref = ref_dream(load_sharded(out), config, torch.from_numpy(tokens).long())
    assert_close("dream", logits, ref)
    np.savez(out / "golden.npz", tokens=tokens, logits=logits.numpy().astype(np.float32))
    special = {"bos": bos_tok, "config_bos": eot, "eos": eot, "pad": eot, "mask": mask,
               "im_start": ids["<|im_start|>"], "im_end": ids["<|im_end|>"]}
    write_golden(out, "dream", text_ids, special, chat, chat_ids, CHAT_MESSAGES, len(auto), config["vocab_size"],
                 "bidirectional", "modeling_dream.DreamModel(input_ids).logits: raw lm_head output, unshifted, "
                 "no attention mask (full bidirectional)")


def gpt2_style_tokenizer(out: Path, n_regular: int, extra_special: list[str], vocab_files: bool):
    """GPT-2's layout: <|endoftext|> is the last entry of the BPE vocab (vocab.json and
    tokenizer.json model.vocab) and also an added special token; extras follow it."""
    from tokenizers import Tokenizer

    tok = train_bpe(n_regular, "gpt2")
    ids = add_tokens(tok, [("<|endoftext|>", True)] + [(s, True) for s in extra_special])
    spec = json.loads(tok.to_str())
    spec["model"]["vocab"]["<|endoftext|>"] = ids["<|endoftext|>"]
    (out / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False, indent=2) + "\n")
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    if vocab_files:
        vocab = dict(sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1]))
        (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False) + "\n")
        merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
        (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return tok, ids


def build_gpt2(out: Path, official: Path, tmp: Path) -> None:
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    tok, ids = gpt2_style_tokenizer(out, GPT2_REGULAR, [], vocab_files=True)
    eot = ids["<|endoftext|>"]
    config = {
        "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
        "bos_token_id": eot, "embd_pdrop": 0.1, "eos_token_id": eot, "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 64, "n_embd": HIDDEN, "n_head": HEADS,
        "n_layer": LAYERS, "n_positions": 64, "resid_pdrop": 0.1, "summary_activation": None,
        "summary_first_dropout": 0.1, "summary_proj_to_labels": True, "summary_type": "cls_index",
        "summary_use_proj": True, "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
        "vocab_size": GPT2_REGULAR + 1,
    }
    write_json(out / "config.json", config)
    write_json(out / "generation_config.json", {"_from_model_config": True, "bos_token_id": eot, "eos_token_id": eot,
                                                "transformers_version": "4.27.0.dev0"})
    write_json(out / "tokenizer_config.json", {"model_max_length": 1024})

    torch.manual_seed(SEED)
    skeleton = GPT2LMHeadModel(GPT2Config(**config_kwargs(config)))
    gen = torch.Generator().manual_seed(SEED + 21)
    tensors = {}
    for k, v in sorted(skeleton.state_dict().items()):
        if k == "lm_head.weight":                       # tied to wte.weight; not stored on the hub
            continue
        name = k.removeprefix("transformer.")
        tensors[name] = random_tensor(name, v.shape, gen)
    for i in range(config["n_layer"]):                  # the hub file keeps the causal-mask buffers
        n = config["n_ctx"]
        tensors[f"h.{i}.attn.bias"] = torch.tril(torch.ones(n, n, dtype=torch.float32)).view(1, 1, n, n)
    del skeleton
    save_sharded(out, tensors)

    model, info = GPT2LMHeadModel.from_pretrained(str(out), output_loading_info=True, attn_implementation="eager")
    files = load_sharded(out)
    buffers = {f"h.{i}.attn.bias" for i in range(config["n_layer"])}
    check_loaded(model, info, files, rename=lambda k: "transformer." + k, ignore=buffers, tied=["lm_head.weight"])
    model.eval()
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()

    auto = AutoTokenizer.from_pretrained(str(out))
    assert isinstance(auto, GPT2TokenizerFast)
    text_ids = tokenizer_checks(out, tok, auto, SAMPLE_TEXT)
    rng = np.random.default_rng(SEED + 22)
    tokens = make_tokens(text_ids, GPT2_REGULAR, None, {8: eot}, rng)
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(tokens).long()).logits.float()
        ref = ref_gpt2(files, config, torch.from_numpy(tokens).long())
    assert_close("gpt2", logits, ref)
    np.savez(out / "golden.npz", tokens=tokens, logits=logits.numpy().astype(np.float32))
    write_golden(out, "gpt2", text_ids, {"bos": eot, "eos": eot}, None, None, None, len(auto),
                 config["vocab_size"], "causal", "transformers.GPT2LMHeadModel(input_ids).logits (eager attention)")


def build_mdlm(out: Path, official: Path, tmp: Path) -> None:
    import transformers
    from transformers import AutoTokenizer, GPT2TokenizerFast, modeling_outputs

    tok, ids = gpt2_style_tokenizer(out, MDLM_REGULAR, ["[MASK]"], vocab_files=False)
    eot, mask = ids["<|endoftext|>"], ids["[MASK]"]
    assert mask == tok.get_vocab_size(with_added_tokens=True) - 1
    config = {
        "_name_or_path": "kuleshov-group/mdlm-owt", "architectures": ["MDLM"],
        "auto_map": {"AutoConfig": "configuration_mdlm.MDLMConfig", "AutoModelForMaskedLM": "modeling_mdlm.MDLM"},
        "cond_dim": 32, "dropout": 0.1, "hidden_dim": HIDDEN, "model_length": 64, "model_type": "mdlm",
        "n_blocks": LAYERS, "n_heads": HEADS, "return_dict": False, "time_conditioning": False,
        "torch_dtype": "float32", "transformers_version": "4.38.2", "vocab_size": MDLM_REGULAR + 2,
    }
    write_json(out / "config.json", config)
    write_json(out / "tokenizer_config.json", {
        "added_tokens_decoder": added_decoder(ids, [("<|endoftext|>", True), ("[MASK]", True)]),
        "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "mask_token": "[MASK]",
        "model_max_length": 1024, "tokenizer_class": "GPT2TokenizerFast", "unk_token": "<|endoftext|>"})

    import_official(official, "mdlm", "mdlm_official", tmp, patch=patch_dit)
    cfgmod = importlib.import_module("mdlm_official.configuration_mdlm")
    dit = importlib.import_module("mdlm_official.dit")

    class MDLM(transformers.PreTrainedModel):
        """The hub's modeling_mdlm.MDLM: HF wrapper, `backbone` = the official DIT."""
        config_class = cfgmod.MDLMConfig
        base_model_prefix = "mdlm"

        def __init__(self, config):
            super().__init__(config)
            self.backbone = dit.DIT({"model": {
                "hidden_size": config.hidden_dim, "cond_dim": config.cond_dim, "n_heads": config.n_heads,
                "n_blocks": config.n_blocks, "dropout": config.dropout, "scale_by_sigma": False}},
                vocab_size=config.vocab_size)

        def forward(self, input_ids=None, timesteps=None, output_hidden_states=None, return_dict=None):
            sigma = timesteps
            if not self.config.time_conditioning:      # DITBackbone.forward
                sigma = torch.zeros_like(sigma)
            logits = self.backbone(input_ids, sigma)
            if return_dict:
                return modeling_outputs.MaskedLMOutput(logits=logits, hidden_states=None, loss=None)
            return logits

    torch.manual_seed(SEED)
    skeleton = MDLM(cfgmod.MDLMConfig(**config_kwargs(config)))
    gen = torch.Generator().manual_seed(SEED + 31)
    tensors = {}
    for k, v in sorted(skeleton.state_dict().items()):
        tensors[k] = v.clone() if k.endswith("rotary_emb.inv_freq") else random_tensor(k, v.shape, gen)
    del skeleton
    save_sharded(out, tensors)

    model, info = MDLM.from_pretrained(str(out), output_loading_info=True)
    assert isinstance(model.config, cfgmod.MDLMConfig) and model.config.time_conditioning is False
    files = load_sharded(out)
    check_loaded(model, info, files)
    model.eval()

    auto = AutoTokenizer.from_pretrained(str(out))
    assert isinstance(auto, GPT2TokenizerFast) and auto.mask_token_id == mask
    text_ids = tokenizer_checks(out, tok, auto, SAMPLE_TEXT)
    rng = np.random.default_rng(SEED + 32)
    tokens = make_tokens(text_ids, MDLM_REGULAR, mask, {8: eot}, rng)
    sigma = np.array([0.35, 2.1], dtype=np.float32)
    ids_t, sig_t = torch.from_numpy(tokens).long(), torch.from_numpy(sigma)
    with torch.no_grad():
        logits = model.backbone(ids_t, sig_t).float()                  # time path active
        logits0 = model.backbone(ids_t, torch.zeros_like(sig_t)).float()
        released = model(input_ids=ids_t, timesteps=sig_t).float()     # time_conditioning=False
        assert torch.equal(released, logits0)
        assert_close("mdlm(sigma)", logits, ref_mdlm(files, config, ids_t, sig_t))
        assert_close("mdlm(sigma=0)", logits0, ref_mdlm(files, config, ids_t, torch.zeros_like(sig_t)))
    delta = (logits - logits0).abs().max().item()
    print(f"  mdlm: max |logits(sigma) - logits(0)| = {delta:.3f}")
    assert delta > 0.05, "time path has no effect"
    np.savez(out / "golden.npz", tokens=tokens, logits=logits.numpy(), sigma=sigma, logits_sigma0=logits0.numpy())
    write_golden(out, "mdlm", text_ids, {"bos": eot, "eos": eot, "mask": mask}, None, None, None, len(auto),
                 config["vocab_size"], "bidirectional",
                 "official kuleshov-group/mdlm models/dit.py DIT(indices, sigma): raw backbone output before "
                 "the subs parameterization; `logits` at sigma=`sigma` (time path active), `logits_sigma0` at "
                 "sigma=0 = what the released model (time_conditioning=false) returns for any sigma")


def write_golden(out, arch, text_ids, special, chat, chat_ids, messages, n_tok, vocab, attention, source):
    golden = {"arch": arch, "text": SAMPLE_TEXT, "ids": text_ids, "special": special,
              "tokenizer_len": n_tok, "config_vocab_size": vocab, "attention": attention, "logits_source": source}
    if chat is not None:
        golden.update({"chat_messages": messages, "chat": chat, "chat_ids": chat_ids})
    if arch == "mdlm":
        golden["sigma_definition"] = ("sigma is MDLM's total noise sigma(t) (loglinear: -log(1-(1-eps)t)), "
                                      "fed to TimestepEmbedder unscaled: emb = [cos(sigma*f), sin(sigma*f)], "
                                      "f_i = exp(-ln(10000) i/128), i<128; c = silu(mlp(emb))")
        golden["time_conditioning"] = False
    write_json(out / "golden.json", golden, flat_lists=True)


BUILDERS = {"llada": build_llada, "dream": build_dream, "gpt2": build_gpt2, "mdlm": build_mdlm}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--official-dir", type=Path, default=Path("/tmp/official"))
    parser.add_argument("--out", type=Path, default=HERE / "hf")
    parser.add_argument("--arch", nargs="*", default=list(BUILDERS))
    parser.add_argument("--allow-unverified", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    for arch, template in (("llada", LLADA_CHAT_TEMPLATE), ("dream", DREAM_CHAT_TEMPLATE)):
        assert hashlib.sha256(template.encode()).hexdigest() == CHAT_TEMPLATE_SHA256[arch], arch
    for rel, digest in OFFICIAL_SHA256.items():
        got = sha256(args.official_dir / rel)
        if got != digest:
            msg = f"{rel}: sha256 {got} != {digest}"
            if not args.allow_unverified:
                sys.exit(msg + " (pass --allow-unverified to use it anyway)")
            print("WARNING", msg)
    with tempfile.TemporaryDirectory(prefix="hf_golden_") as tmpdir:
        for arch in args.arch:
            out = args.out / arch
            if out.exists():
                shutil.rmtree(out)
            out.mkdir(parents=True)
            print(f"[{arch}] -> {out}")
            with contextlib.redirect_stderr(io.StringIO()) as err:
                BUILDERS[arch](out, args.official_dir, Path(tmpdir))
            noise = err.getvalue().strip()
            if noise:
                print("  (stderr)", noise.replace("\n", "\n  "))
            for f in sorted(out.iterdir()):
                print(f"  {f.name:40s} {f.stat().st_size:8d}")


if __name__ == "__main__":
    main()
