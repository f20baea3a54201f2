"""Released models in and out: a Hugging Face model directory as an ordinary dlm workdir
(`from_hf`), and a dlm workdir as a Hugging Face directory (`to_hf`).

    python -m dlm.convert --from_hf=DIR --arch=llada|dream|mdlm|gpt2 --workdir=OUT
    python -m dlm.convert --to_hf=OUT_DIR --arch=llada|gpt2 --workdir=DIR

The architectures (`ARCHS`, one module each) say how their `config.json` becomes the `model`
section and where each tensor goes (`dlm.convert.layout`). `from_hf` reads tensors one at a
time from the memory-mapped safetensors shards into the parameters' final dtype, so it holds
the converted model once (not the model plus a copy of the files), and writes a parameters-only
checkpoint (`Checkpoints.save_params`) with the config (roles of the special tokens, the mask
id among them, stop tokens and the chat template included) and the tokenizer: `sample.py`,
`dlm.evaluate`, `dlm.load` and `train.init_from` read it like any workdir. A tensor left over,
missing or of the wrong shape, or a tokenizer larger than the embedding is an error naming it.
"""

from __future__ import annotations

import json
import os
import resource
import time

import jax
import numpy as np
import tokenizers
from flax import nnx

from dlm import config as config_lib
from dlm import models
from dlm.convert import dream, gpt2, hf_files, layout, llada, mdlm
from dlm.data.tokenizer import Tokenizer
from dlm.errors import DlmError
from dlm.train import checkpoint as ckpt_lib
from dlm.train import pretrained, restore
from dlm.train import workdir as workdir_lib

ARCHS = {a.name: a for a in (llada.ARCH, dream.ARCH, gpt2.ARCH, mdlm.ARCH)}
DEFAULT_SEQ_LEN = 1024  # data.seq_len (sample.py's default length) at most this by default


def arch_of(hf: dict, name: str | None) -> layout.Arch:
  """The architecture named by `--arch`, else the one whose model_type config.json has."""
  if name:
    if name not in ARCHS:
      raise DlmError(f"unknown --arch {name!r}; expected one of {sorted(ARCHS)}")
    arch = ARCHS[name]
    model_type = hf.get("model_type")
    if model_type is not None and model_type not in arch.model_types:
      raise DlmError(f"config.json has model_type {model_type!r}, not {arch.name}'s "
                     f"{arch.model_types[0]!r}")
    return arch
  model_type = hf.get("model_type")
  for arch in ARCHS.values():
    if model_type in arch.model_types:
      return arch
  raise DlmError(f"unknown model_type {model_type!r} in config.json; dlm converts "
                 f"{sorted(t for a in ARCHS.values() for t in a.model_types)} (or name --arch)")


def _chat_template(directory: str, tokenizer_config: dict) -> str:
  template = tokenizer_config.get("chat_template") or ""
  if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
    named = {t.get("name"): t.get("template", "") for t in template if isinstance(t, dict)}
    template = named.get("default", next(iter(named.values()), ""))
  path = os.path.join(directory, "chat_template.jinja")
  if not template and os.path.isfile(path):
    with open(path, encoding="utf-8") as f:
      template = f.read()
  return template


def _read_tokenizer(directory: str, tokenizer: str, arch: layout.Arch):
  """(tokenizers.Tokenizer, its path, tokenizer_config.json beside it): `tokenizer` (a file or
  directory) or the model directory's tokenizer.json, else what the architecture builds from
  its release's own files."""
  path = tokenizer or os.path.join(directory, "tokenizer.json")
  if os.path.isdir(path):
    path = os.path.join(path, "tokenizer.json")
  tokenizer_config = hf_files.read_json(os.path.dirname(path), "tokenizer_config.json",
                                        required=False)
  if not os.path.isfile(path):
    built = None if tokenizer or arch.tokenizer is None else arch.tokenizer(
        directory, tokenizer_config)
    if built is None:
      raise DlmError(f"no tokenizer at {path!r}: the model directory needs a tokenizer.json "
                     "(or give --tokenizer=FILE, e.g. GPT-2's for MDLM)")
    return built, path, tokenizer_config
  try:
    return tokenizers.Tokenizer.from_file(path), path, tokenizer_config
  except Exception as e:  # tokenizers raises a bare Exception
    raise DlmError(f"{path} is not a valid tokenizer.json ({e})") from None


def build_config(hf: dict, arch: layout.Arch, roles: dict, chat_template: str,
                 seq_len: int = 0, param_dtype: str = ""):
  """The dlm config of a converted model."""
  overrides = arch.config(hf)
  context = overrides.pop("context")
  config = config_lib.base_config()
  for key, value in overrides.items():
    section, name = key.split(".")
    config[section][name] = value
  tok = config.data.tokenizer
  tok.num_reserved_pads = 0  # no tokens added: the embedding has no rows for them
  for role in ("mask", "bos", "eos", "pad"):
    tok.special_tokens[role] = roles.get(role, "")
  tok.stop_tokens = tuple(roles.get("stop", ()))
  tok.chat_template = chat_template
  config.data.seq_len = seq_len or min(int(context), DEFAULT_SEQ_LEN)
  stored = {"bfloat16": "bfloat16", "float32": "float32"}.get(str(hf.get("torch_dtype")),
                                                              "float32")
  config.model.param_dtype = param_dtype or stored
  return config_lib.validate(config)


def _abstract(config, tokenizer):
  """(the model's parameters as a pure dict of ShapeDtypeStructs, the same by path)."""
  model = nnx.eval_shape(lambda: models.build(config, tokenizer, nnx.Rngs(0)))
  tree = nnx.to_pure_dict(nnx.state(model))
  return tree, pretrained.flat(tree)


def peak_rss_gb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def from_hf(directory: str, workdir: str, arch: str | None = None, *, tokenizer: str = "",
            seq_len: int = 0, param_dtype: str = "") -> dict:
  """Converts a Hugging Face model directory into a new workdir; returns a report (arch,
  tensors, parameters, bytes, seconds, peak RSS)."""
  start = time.time()
  hf = hf_files.read_json(directory, "config.json")
  arch_rec = arch_of(hf, arch)
  hf_tok, tok_path, tokenizer_config = _read_tokenizer(directory, tokenizer, arch_rec)
  tok_dir = os.path.dirname(tok_path)
  vocab_by_id = {i: t for t, i in hf_tok.get_vocab(with_added_tokens=True).items()}
  roles = arch_rec.roles(hf, tokenizer_config, vocab_by_id)
  config = build_config(hf, arch_rec, roles, _chat_template(tok_dir, tokenizer_config), seq_len,
                        param_dtype)
  tok = Tokenizer(hf_tok, 0, {r: roles[r] for r in ("mask", "bos", "eos", "pad") if roles[r]},
                  config.data.tokenizer.stop_tokens)
  if tok.vocab_size > config.model.vocab_size:
    raise DlmError(f"the tokenizer has {tok.vocab_size} tokens but the embedding has "
                   f"{config.model.vocab_size} rows: {tok_path} is not this model's tokenizer")
  abstract, shapes = _abstract(config, tok)
  specs = arch_rec.tensors(hf)
  layout.check_cover(specs, {k: v.shape for k, v in shapes.items()})
  weights, stored = _match(directory, arch_rec, specs)
  workdir_lib.check_local(workdir)
  if os.path.isdir(ckpt_lib.checkpoint_dir(workdir)) and os.listdir(
      ckpt_lib.checkpoint_dir(workdir)):
    raise DlmError(f"workdir {workdir!r} already holds checkpoints; convert into a new one")
  workdir_lib.prepare(workdir)
  ckpts = ckpt_lib.Checkpoints(workdir, keep=1, async_save=False)
  try:
    params = _read_tensors(weights, stored, specs, shapes)
    ckpts.save_params(0, pretrained.unflat_like(abstract, params), config, tok)
  finally:
    ckpts.close()
  n = sum(int(np.prod(s.shape)) for s in shapes.values())
  return {"arch": arch_rec.name, "workdir": workdir, "family": config.model.family,
          "tensors": len(specs), "parameters": n,
          "bytes": sum(a.nbytes for a in params.values()), "param_dtype": config.model.param_dtype,
          "vocab": tok.vocab_size, "rows": config.model.vocab_size,
          "mask_id": tok.mask_id, "seconds": round(time.time() - start, 2),
          "peak_rss_gb": round(peak_rss_gb(), 3)}


def _match(directory: str, arch: layout.Arch, specs) -> tuple[hf_files.Weights, dict]:
  """(the directory's weights, each Tensor's stored name), every name and shape checked
  before anything is read or written."""
  by_name = {t.name: t for t in specs}
  weights = hf_files.Weights(directory)
  stored = {}
  for name in weights.names:
    canonical = arch.rename(name)
    if canonical in by_name:
      stored[canonical] = name
    elif not arch.ignored(canonical):
      raise DlmError(f"tensor {name} of {directory!r} has no place in a {arch.name} model "
                     "(unmapped)")
  missing = [t.name for t in specs if t.name not in stored]
  if missing:
    raise DlmError(f"tensor {missing[0]} is missing from {directory!r}"
                   + (f" ({len(missing)} missing)" if len(missing) > 1 else ""))
  for t in specs:  # every shape, before the first tensor is read
    if weights.shape(stored[t.name]) != tuple(t.shape):
      raise DlmError(f"tensor {stored[t.name]} has shape {weights.shape(stored[t.name])}; "
                     f"this {arch.name} config.json needs {tuple(t.shape)}")
  return weights, stored


def _read_tensors(weights: hf_files.Weights, stored: dict, specs,
                  shapes) -> dict[str, np.ndarray]:
  """dlm path -> array in its final dtype, filled tensor by tensor from the shards."""
  params: dict[str, np.ndarray] = {}
  for t in specs:
    target = shapes[t.path]
    value = t.to_dlm(weights.get(stored[t.name]), layout.slot_shape(target.shape, t.index))
    if t.index:
      if t.path not in params:
        params[t.path] = np.empty(target.shape, target.dtype)
      params[t.path][t.index] = value
    else:
      params[t.path] = value.astype(target.dtype, copy=False)
    del value
  return params


def to_hf(workdir: str, directory: str, arch: str, *, step: int | None = None,
          which: str = "ema", shard_bytes: int = 4 << 30) -> dict:
  """Writes a workdir's model as a Hugging Face directory in `arch`'s layout (config.json,
  safetensors shards, tokenizer.json, tokenizer_config.json); returns a report."""
  if arch not in ARCHS or ARCHS[arch].hf_config is None:
    writable = sorted(a for a, r in ARCHS.items() if r.hf_config is not None)
    raise DlmError(f"--to_hf writes the {writable} layouts, not {arch!r}")
  arch_rec = ARCHS[arch]
  if os.path.exists(directory) and os.listdir(directory):
    raise DlmError(f"{directory!r} is not empty; give a new directory for the HF model")
  config = restore.read_config(workdir, step)
  why = arch_rec.expressible(config)
  if why:
    raise DlmError(f"{workdir!r} cannot be written as {arch}: {why}")
  config, tok, model, step = restore.load(workdir, which, step)
  values = {k: np.asarray(jax.device_get(v))
            for k, v in pretrained.flat(nnx.to_pure_dict(nnx.state(model))).items()}
  rows = int(values["net/embed"].shape[0])
  ids = {"mask": tok.mask_id, "bos": tok.bos_id, "eos": tok.eos_id, "pad": tok.pad_id}
  hf = arch_rec.hf_config(config, rows, ids)
  specs = arch_rec.tensors(hf)
  layout.check_cover(specs, {k: v.shape for k, v in values.items()})
  os.makedirs(directory, exist_ok=True)
  tensors = ((t.name, t.to_hf(values[t.path][t.index] if t.index else values[t.path]))
             for t in specs)
  files = hf_files.write_weights(directory, tensors, shard_bytes)
  with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as f:
    json.dump(hf, f, indent=2)
  tok.hf.save(os.path.join(directory, "tokenizer.json"))
  names = {r: tok.token(i) for r, i in ids.items()}
  tokenizer_config = {"bos_token": names["bos"], "eos_token": names["eos"],
                      "pad_token": names["pad"], "mask_token": names["mask"],
                      "model_max_length": config.data.seq_len,
                      "tokenizer_class": "PreTrainedTokenizerFast"}
  if config.data.tokenizer.chat_template:
    tokenizer_config["chat_template"] = config.data.tokenizer.chat_template
  with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
    json.dump(tokenizer_config, f, indent=2)
  return {"arch": arch, "workdir": workdir, "step": step, "directory": directory,
          "files": files + ["config.json", "tokenizer.json", "tokenizer_config.json"],
          "tensors": len(specs)}
