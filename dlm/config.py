"""The base config: every key with its documented default.

Experiment configs in `configs/` start from `base_config()` and change what they need; users
change keys on the command line (`--config.data.seq_len=128`). A key that is not here is an
error, not a silent no-op.
"""

import importlib.util
import math
import os

from ml_collections import ConfigDict

from dlm.errors import DlmError, one_line


def base_config() -> ConfigDict:
  config = ConfigDict()

  # Data: where documents come from, how they are tokenized, packed and batched.
  config.data = ConfigDict(dict(
      # One line selects the source: tfds:NAME (any TFDS dataset, incl. the embedded
      # python_stdlib/docs and python_stdlib/code), text:GLOB, or jsonl:GLOB.
      dataset="tfds:python_stdlib/docs",
      data_dir="",  # prepared datasets and cached tokenizers; '' = TFDS default (TFDS_DATA_DIR)
      text_feature="text",  # the feature (TFDS) or JSON field holding the document text
      # Conditional (source -> target) data, e.g. tfds:python_stdlib/summarize with "source":
      # one row per pair, [bos] source [eos] target [eos] ... (eos-filled), the prefix given.
      source_feature="",  # '' = unconditional text; else the feature holding the source
      target_feature="target",  # the feature holding the target (with source_feature)
      # Documents are JSON objects {"tokens": [ids], ...} already tokenized (with the
      # tokenizer at data.tokenizer.path), one row each; further int lists become row features
      # (ADJUST trajectories from `python -m dlm.joint_data`: the reveal `order`).
      pretokenized=False,
      source_len=0,  # source tokens kept (its first ones); 0 = seq_len // 2
      # How a pair row is filled after the target (instruction tuning, Kim et al. 2025):
      # 'eos' = eos repeated to the row's end (LLaDA SFT); 'rainbow' = one eos, then the
      # reserved pads pad_0 .. pad_{K-1} cycling (K = tokenizer.num_reserved_pads).
      response_padding="eos",
      train_split="train",
      eval_split="validation",  # TFDS split syntax works: 'test', 'train[:1%]', ...
      document_per="file",  # text:GLOB only: 'file' or 'line'
      validation_fraction=0.05,  # text/jsonl without a {split} in the glob: hash split
      seq_len=256,
      packing="concat",  # 'concat' (join with eos, cut into rows) or 'pad' (a document per row)
      add_bos=False,  # put bos before every document
      seed=0,  # document shuffling
      prefetch=2,  # batches prepared ahead in a background thread (0 = none)
      # The training order's document streams: stream s reads documents s, s+S, ... and fills
      # 1/S of each batch (dlm/train/batches.py). 0 = one per process when the run starts; a
      # resumed run keeps its checkpoint's, so it continues exactly on any process count.
      streams=0,
      tokenizer=ConfigDict(dict(
          path="",  # a tokenizer.json (or a directory holding one); '' = train a byte-level BPE
          vocab_size=8192,  # BPE training only
          train_documents=0,  # BPE training on the first N documents (0 = all)
          num_reserved_pads=7,  # distinct padding tokens for rainbow padding
          # Special tokens by role; '' = found by name ([MASK], <|endoftext|>, ...) or added.
          special_tokens=ConfigDict(dict(mask="", bos="", eos="", pad="")),
      )),
  ))

  # Mesh: axes (data, fsdp, tensor); one entry may be -1 (all remaining devices).
  config.mesh = ConfigDict(dict(
      shape=(-1, 1, 1),
      # Ordered logical-axis rules, first match wins (flax logical_to_mesh_axes).
      rules=(
          ("batch", ("data", "fsdp")),
          ("length", None),
          ("vocab", "tensor"),
          ("embed", "fsdp"),
          ("heads", "tensor"),
          ("kv", None),
          ("mlp", "tensor"),
      ),
  ))

  # Model: the family and its backbone (dlm/models/transformer.py).
  config.model = ConfigDict(dict(
      # 'masked' | 'continuous' | 'neodiff' | 'autoregressive' | 'ccdd' | 'cosmos_ae' |
      # 'cosmos' | 'any_order' | 'joint_head' (see dlm.models.FAMILIES; 'joint_head':
      # ADJUST's sampler head on a frozen masked model whose architecture the other
      # model keys describe, configs/joint_head.py)
      family="masked",
      width=256,
      depth=6,
      heads=4,
      mlp_ratio=4.0,  # SwiGLU hidden width = mlp_ratio * width
      time_conditioning="adaln_zero",  # 'adaln_zero' | 'none' (MD4: masked models need no time)
      cond_width=128,  # width of the time embedding feeding adaLN
      attention="bidirectional",  # 'bidirectional' | 'causal' | 'block_causal'
      block_size=0,  # block_causal only
      rope_theta=10_000.0,
      head_init_std=0.0,  # output projection init std; 0 = zeros (DiT / MDLM final layer)
      tie_embeddings=False,  # output projection = input embedding table, transposed
      dropout=0.0,
      dtype="float32",  # matmul compute dtype: 'float32' | 'bfloat16' (params stay float32)
      remat="none",  # rematerialisation: 'none' | 'full' | 'dots' | 'dots_all'
      scan_layers=False,  # nnx.scan over layers: one compiled layer, faster compiles
      attention_impl="xla",  # 'xla' | 'cudnn' (GPU flash attention) | 'auto'
      # Low-rank adapters W + (lora_alpha / lora_rank) A B on every block's dense weights
      # (attention qkv/out, MLP in/down); B starts at zero, so an adapted model starts equal
      # to its base. 0 = none (no adapter parameters at all: old checkpoints load). Train
      # only them with train.freeze='^(?!.*lora_)' and train.init_from=BASE_WORKDIR.
      lora_rank=0,
      lora_alpha=16.0,
  ))

  # Masked diffusion process (dlm/processes/masked.py).
  config.diffusion = ConfigDict(dict(
      schedule="linear",  # 'linear' | 'cosine' | 'polynomial' | 'loglinear'
      power=2.0,  # polynomial only
      eps=1e-4,  # keeps 0 < alpha < 1 (md4); loglinear: alpha(1) = eps (MDLM)
      timesteps=0,  # 0: continuous-time NELBO; T > 0: discrete-time NELBO with T steps
      antithetic=True,  # low-discrepancy time sampling over the batch
      # How the loss is averaged: 'token' = over all scored tokens of the batch (MDLM/MD4);
      # 'response' = each row's loss divided by its scored length (a pair's response with its
      # padding), then the mean over rows, as in LLaDA's SFT. Reported bits stay per token.
      loss_norm="token",
  ))

  # Continuous diffusion over token embeddings (dlm/models/continuous.py, CDCD/Plaid style).
  config.continuous = ConfigDict(dict(
      embed_dim=64,  # token embedding (diffusion space) width
      schedule="cosine",  # VP schedule: 'cosine' | 'sqrt' (Diffusion-LM) | 'tan_d' (Cosmos)
      tan_d=5.0,  # tan_d only: the shift d
      noise_scale=1.0,  # training noise std multiplier
      self_condition=0.5,  # self-conditioning probability in training (0 = off)
      mse_weight=0.0,  # embedding MSE beside the x_0 cross-entropy
      normalize_embeddings=True,  # CDCD: L2-normalised rows scaled to sqrt(embed_dim)
  ))

  # NeoDiff non-simultaneous diffusion (dlm/models/neodiff.py, dlm/processes/nonsim.py).
  config.neodiff = ConfigDict(dict(
      embed_dim=64,
      num_tau=100,  # intrinsic time levels 0..num_tau-1 (tau_max = 99 in the paper's code)
      train_noise_scale=6.5,  # noise_factor of the official script; sampling uses 1
      self_condition=0.5,
      label_smoothing=0.1,  # anchor cross-entropy
      tau_loss_weight=1.0,
  ))

  # CCDD joint token + representation diffusion (dlm/models/ccdd.py, dlm/processes/gidd.py);
  # the token channel also reads config.diffusion (schedule, eps, antithetic).
  config.ccdd = ConfigDict(dict(
      encoder="",  # HF encoder directory (config.json, model.safetensors); '' = all-MiniLM-L6-v2
      encoder_arch="",  # filled at build: the encoder's config.json (checkpoints need no files)
      encoder_dtype="float32",  # the frozen encoder's matmul dtype
      latent_dim=32,  # channels of z
      reduce="slice",  # 'slice' (first latent_dim standardised channels) | 'pca' (fitted)
      pca_rows=256,  # training rows the PCA is fitted on
      p_uniform=0.0,  # GIDD uniform-noise share (0 = MDLM masking)
      gamma=1.0,  # GIDD: c_t = B (t (1 - t))^(gamma / 2)
      async_time=False,  # z at its own uniform time instead of the tokens' t
      p_r_min=0.0,  # representation masking: p_r ~ U[p_r_min, p_r_max] per batch zeroes z0
      p_r_max=1.0,  # at masked tokens before noising (CCDD's released configs: U[0, 1])
      p_drop_z=0.1,  # whole-sample dropout of z_t in training (for guidance)
      p_drop_x=0.0,  # whole-sample dropout of x_t (all [MASK]) in training
      z_weight=1.0,  # weight of the z MSE beside the token NELBO
      z_weight_max=10.0,  # the MSE's time weight min(1 / (1 - t), z_weight_max)
  ))

  # Cosmos (dlm/models/cosmos.py): stage 1 `cosmos_ae` trains the autoencoder, stage 2
  # `cosmos` the latent diffusion (config.model sizes its denoiser) on a stage-1 workdir.
  config.cosmos = ConfigDict(dict(
      encoder="",  # HF encoder directory (config.json, model.safetensors); '' = all-MiniLM-L6-v2
      encoder_arch="",  # filled at build: the encoder's config.json (checkpoints need no files)
      encoder_dtype="float32",
      num_latents=16,  # N latent vectors per row (seq_len / N = the compression)
      latent_dim=64,  # channels per latent
      ae_width=128,  # compressor / decompressor width, depth and heads
      ae_depth=2,
      ae_heads=2,
      ce_weight=1.0,  # token cross-entropy
      align_weight=1.0,  # MSE of the decompressor's states to the encoder's (standardised)
      mask_share=0.5,  # augmentation: this share of the batch masks encoder states...
      mask_p=0.3,  # ... each token dropped from the compressor's attention with this p
      noise_delta=0.7,  # the other rows: h' = delta h + sqrt(1 - delta^2) eps
      latent_dropout=0.4,  # element-wise latent dropout (no rescale); 0 = off
      stats_rows=256,  # training rows for the encoder's and the latents' statistics
      autoencoder_workdir="",  # stage 2: the stage-1 workdir (frozen, settings adopted)
      tan_d=5.0,  # stage 2: VP tan-d schedule shift d
      self_condition=0.5,  # stage 2: self-conditioning probability in training
      t_min=0.05,  # stage 2 sampling: the grid runs from t = 1 to t_min, then decodes x0
  ))

  # Any-subset autoregressive models (dlm/models/any_order.py, AS-ARM / ASSD, arXiv 2504.20456).
  config.any_order = ConfigDict(dict(
      # Training masking rate: each row draws r (stratified over the batch) in [min_rate,
      # max_rate] and round(r * n) of its n maskable tokens become targets (the paper's final
      # range; its warm-up from 0.15 is for fine-tuning XLNet and is not done here).
      min_rate=0.85,
      max_rate=0.99,
      order="left_to_right",  # the targets' order: 'left_to_right' | 'random' (any order)
  ))

  # ADJUST joint-sampling head (model.family='joint_head', dlm/models/joint_head.py).
  config.joint = ConfigDict(dict(
      unrolls=7,  # head unrolls in training (the paper's speculation_len); loss at K ~ U{1..}
      # which tokens training masks: 'trajectory' (the last fraction of each row's reveal
      # order: states of the exact sampler) or 'random' (random positions, the paper's code;
      # reveals then follow the base's entropy)
      noising="trajectory",
      zero_init=True,  # the head's output norm starts at 0: the untrained head is the marginal
  ))

  # Training (train.py, dlm/train/).
  config.train = ConfigDict(dict(
      steps=10_000,
      batch_size=32,  # global, over all processes
      lr=3e-4,  # peak learning rate of AdamW
      warmup_steps=500,
      lr_schedule="cosine",  # 'cosine' (decay to min_lr_ratio * lr at `steps`) | 'constant'
      min_lr_ratio=0.1,
      b1=0.9,
      b2=0.999,
      weight_decay=0.0,  # decoupled, on matrices only
      grad_clip=1.0,  # global norm; 0 = off
      grad_accum=1,  # micro-batches per step (same update as the full batch)
      # A step whose loss, gradient or update is not finite is skipped (parameters, optimizer
      # and EMA unchanged; counted as train/skipped_steps); this many in a row stop training
      # with an error, the last good state checkpointed.
      max_nonfinite_steps=10,
      ema_decay=0.9999,  # warmed up: min(ema_decay, (1 + step) / (10 + step))
      seed=0,
      log_every=50,
      eval_every=1000,
      eval_batches=0,  # 0 = the whole evaluation split
      checkpoint_every=1000,
      keep_checkpoints=3,
      async_checkpoint=True,
      progress=True,  # progress bar on stderr
      # Pretrained and frozen parameters (dlm/train/pretrained.py).
      init_from="",  # a workdir whose checkpoint initialises the model (fine-tuning)
      init_into="",  # where its parameters go in this model: '' = the root, e.g. 'base'
      init_which="ema",  # 'ema' | 'params': which of its parameters
      freeze="",  # regex over parameter paths ('a/b/kernel') that are never trained
  ))
  return config


def _is_int(x) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_mesh_shape(shape) -> None:
  if (not isinstance(shape, (tuple, list)) or len(shape) != 3
      or not all(_is_int(s) and (s >= 1 or s == -1) for s in shape)
      or list(shape).count(-1) > 1):
    raise DlmError(f"mesh.shape must be three integers (data, fsdp, tensor), each positive or "
                   f"one of them -1 (the remaining devices), got {shape!r}")


def _check_positive_ints(section, name: str, keys) -> None:
  for key in keys:
    if not _is_int(section[key]) or section[key] <= 0:
      raise DlmError(f"{name}.{key} must be a positive integer, got {section[key]!r}")


def validate(config: ConfigDict) -> ConfigDict:
  """Checks values that would otherwise fail deep inside JAX or grain; raises DlmError."""
  _check_mesh_shape(config.mesh.shape)
  d = config.data
  if not isinstance(d.seq_len, int) or d.seq_len <= 0:
    raise DlmError(f"data.seq_len must be a positive integer, got {d.seq_len!r}")
  if d.packing not in ("concat", "pad"):
    raise DlmError(f"data.packing must be 'concat' or 'pad', got {d.packing!r}")
  if d.document_per not in ("file", "line"):
    raise DlmError(f"data.document_per must be 'file' or 'line', got {d.document_per!r}")
  if not 0.0 <= d.validation_fraction < 1.0:
    raise DlmError(f"data.validation_fraction must be in [0, 1), got {d.validation_fraction}")
  if d.source_feature:
    from dlm.data.pipeline import resolve_source_len  # pylint: disable=g-import-not-at-top

    if not d.target_feature or d.target_feature == d.source_feature:
      raise DlmError(f"data.target_feature={d.target_feature!r} must name a feature other than "
                     f"data.source_feature={d.source_feature!r}")
    resolve_source_len(d.seq_len, d.source_len)
  elif not isinstance(d.source_len, int) or d.source_len < 0:
    raise DlmError(f"data.source_len must be a non-negative integer, got {d.source_len!r}")
  if d.pretokenized and (d.source_feature or not d.tokenizer.path):
    raise DlmError("data.pretokenized needs data.tokenizer.path (the tokenizer of the ids) "
                   "and no data.source_feature")
  if d.response_padding not in ("eos", "rainbow"):
    raise DlmError(f"data.response_padding must be 'eos' or 'rainbow', got "
                   f"{d.response_padding!r}")
  if d.response_padding == "rainbow" and d.tokenizer.num_reserved_pads < 1:
    raise DlmError("data.response_padding='rainbow' needs data.tokenizer.num_reserved_pads >= 1")
  if not isinstance(d.streams, int) or isinstance(d.streams, bool) or d.streams < 0:
    raise DlmError(f"data.streams must be a non-negative integer, got {d.streams!r}")
  if not _is_int(d.prefetch) or d.prefetch < 0:
    raise DlmError(f"data.prefetch must be a non-negative integer, got {d.prefetch!r}")
  t = config.train
  _check_positive_ints(t, "train", ("batch_size", "steps", "log_every", "eval_every",
                                    "checkpoint_every", "keep_checkpoints", "grad_accum",
                                    "max_nonfinite_steps"))
  for key in ("eval_batches", "warmup_steps"):
    if not _is_int(t[key]) or t[key] < 0:
      raise DlmError(f"train.{key} must be a non-negative integer, got {t[key]!r}")
  if not _is_number(t.lr) or t.lr <= 0:
    raise DlmError(f"train.lr must be a positive number, got {t.lr!r}")
  for key in ("grad_clip", "weight_decay", "min_lr_ratio"):
    if not _is_number(t[key]) or t[key] < 0:
      raise DlmError(f"train.{key} must be a non-negative number, got {t[key]!r}")
  for key in ("b1", "b2", "ema_decay"):
    if not _is_number(t[key]) or not 0.0 <= t[key] < 1.0:
      raise DlmError(f"train.{key} must be in [0, 1), got {t[key]!r}")
  if t.lr_schedule not in ("cosine", "constant"):
    raise DlmError(f"train.lr_schedule must be 'cosine' or 'constant', got {t.lr_schedule!r}")
  if t.batch_size % t.grad_accum:
    raise DlmError(f"train.grad_accum={t.grad_accum} must divide train.batch_size={t.batch_size}")
  m = config.model
  _check_positive_ints(m, "model", ("width", "depth", "heads", "cond_width"))
  if not _is_number(m.mlp_ratio) or m.mlp_ratio <= 0:
    raise DlmError(f"model.mlp_ratio must be a positive number, got {m.mlp_ratio!r}")
  if not _is_number(m.dropout) or not 0.0 <= m.dropout < 1.0:
    raise DlmError(f"model.dropout must be in [0, 1), got {m.dropout!r}")
  from dlm.models import FAMILIES  # pylint: disable=g-import-not-at-top
  from dlm.models.transformer import REMAT_POLICIES  # pylint: disable=g-import-not-at-top
  from dlm.processes.schedules import KINDS  # pylint: disable=g-import-not-at-top

  if m.family not in FAMILIES:
    raise DlmError(f"unknown model.family {m.family!r}; expected one of {FAMILIES}")
  if m.width % m.heads or (m.width // m.heads) % 2:
    raise DlmError(f"model.width={m.width} must split into model.heads={m.heads} heads of even size")
  if m.remat not in REMAT_POLICIES:
    raise DlmError(f"model.remat must be one of {tuple(REMAT_POLICIES)}, got {m.remat!r}")
  if m.attention not in ("bidirectional", "causal", "block_causal"):
    raise DlmError(f"unknown model.attention {m.attention!r}")
  if m.attention == "block_causal" and m.block_size <= 0:
    raise DlmError("model.attention='block_causal' needs model.block_size > 0")
  if m.time_conditioning not in ("adaln_zero", "none"):
    raise DlmError(f"model.time_conditioning must be 'adaln_zero' or 'none', got "
                   f"{m.time_conditioning!r}")
  if m.dtype not in ("float32", "bfloat16"):
    raise DlmError(f"model.dtype must be 'float32' or 'bfloat16', got {m.dtype!r}")
  c = config.get("cosmos")
  if c is not None and (c.ae_width % c.ae_heads or (c.ae_width // c.ae_heads) % 2):
    raise DlmError(f"cosmos.ae_width={c.ae_width} must split into cosmos.ae_heads={c.ae_heads} "
                   "heads of even size")
  for key in ("num_latents", "latent_dim", "ae_depth", "stats_rows") if c is not None else ():
    if c[key] <= 0:
      raise DlmError(f"cosmos.{key} must be positive, got {c[key]}")
  for key in ("mask_share", "mask_p", "latent_dropout", "self_condition") if c is not None else ():
    if not 0.0 <= c[key] <= 1.0:
      raise DlmError(f"cosmos.{key} must be in [0, 1], got {c[key]}")
  if c is not None and (not 0.0 < c.noise_delta <= 1.0 or not 0.0 <= c.t_min < 1.0):
    raise DlmError("need 0 < cosmos.noise_delta <= 1 and 0 <= cosmos.t_min < 1")
  cc = config.get("ccdd")
  if cc is not None:
    if not _is_int(cc.latent_dim) or cc.latent_dim <= 0:
      raise DlmError(f"ccdd.latent_dim must be a positive integer, got {cc.latent_dim!r}")
    if not _is_number(cc.gamma) or not 0.0 < cc.gamma <= 2.0:
      raise DlmError(f"ccdd.gamma must be in (0, 2] (GIDD's process is valid only there), got "
                     f"{cc.gamma!r}")
    if not _is_number(cc.p_uniform) or not 0.0 <= cc.p_uniform < 1.0:
      raise DlmError(f"ccdd.p_uniform must be in [0, 1), got {cc.p_uniform!r}")
  a = config.get("any_order")
  if a is not None:
    if not 0.0 < a.min_rate <= a.max_rate <= 1.0:
      raise DlmError(f"any_order rates need 0 < min_rate <= max_rate <= 1, got "
                     f"[{a.min_rate}, {a.max_rate}]")
    from dlm.models.any_order import ORDERS  # pylint: disable=g-import-not-at-top

    if a.order not in ORDERS:
      raise DlmError(f"any_order.order must be one of {ORDERS}, got {a.order!r}")
  j = config.joint
  if j.noising not in ("trajectory", "random") or not isinstance(j.unrolls, int) or j.unrolls < 1:
    raise DlmError(f"joint.noising must be 'trajectory' or 'random' and joint.unrolls >= 1, got "
                   f"{j.noising!r} and {j.unrolls!r}")
  if m.family == "joint_head" and (not t.init_from or t.init_into.strip("/") != "base"):
    raise DlmError("model.family='joint_head' trains a head on a frozen base: set "
                   "train.init_from to the base's workdir and train.init_into='base' "
                   "(configs/joint_head.py does)")
  if not isinstance(m.lora_rank, int) or isinstance(m.lora_rank, bool) or m.lora_rank < 0:
    raise DlmError(f"model.lora_rank must be a non-negative integer, got {m.lora_rank!r}")
  if m.lora_rank and m.lora_alpha <= 0:
    raise DlmError(f"model.lora_alpha must be positive, got {m.lora_alpha!r}")
  if config.diffusion.loss_norm not in ("token", "response"):
    raise DlmError(f"diffusion.loss_norm must be 'token' or 'response', got "
                   f"{config.diffusion.loss_norm!r}")
  if config.diffusion.schedule not in KINDS:
    raise DlmError(f"unknown diffusion.schedule {config.diffusion.schedule!r}; "
                   f"expected one of {KINDS}")
  return config


def load_file(spec: str) -> ConfigDict:
  """`get_config()` of a config file; `file.py:ARG` calls `get_config(ARG)` (as `--config=`
  does). Every way the file can fail becomes one DlmError line: missing, a syntax error, an
  exception while it loads, no `get_config`, `get_config` raising (its own message is shown,
  e.g. a rejected variant) or returning something other than a ConfigDict."""
  path, arg = spec, None
  if not os.path.exists(path) and ":" in path:
    path, arg = spec.split(":", 1)
  if not os.path.isfile(path):
    raise DlmError(f"config file {path!r} does not exist")
  module_spec = importlib.util.spec_from_file_location("dlm_user_config", path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except SyntaxError as e:
    raise DlmError(f"config file {path!r}: syntax error at line {e.lineno}: {e.msg}") from None
  except Exception as e:  # pylint: disable=broad-except
    raise DlmError(f"config file {path!r} failed to load: {one_line(e)}") from None
  get_config = getattr(module, "get_config", None)
  if not callable(get_config):
    raise DlmError(f"config file {path!r} has no get_config() function")
  call = "get_config()" if arg is None else f"get_config({arg!r})"
  try:
    config = get_config() if arg is None else get_config(arg)
  except Exception as e:  # pylint: disable=broad-except
    raise DlmError(f"config file {path!r}: {call} failed: {one_line(e)}") from None
  if not isinstance(config, ConfigDict):
    raise DlmError(f"config file {path!r}: {call} returned {type(config).__name__}, not an "
                   "ml_collections ConfigDict (start from dlm.config.base_config())")
  return config


def from_file(path: str, **overrides) -> ConfigDict:
  """Loads a config file (`load_file`), applies dotted overrides, validates, locks."""
  config = load_file(path)
  config.lock()
  for key, value in overrides.items():
    parent = config
    *heads, last = key.split(".")
    for h in heads:
      parent = parent[h]
    parent[last] = value  # raises on an unknown key, as the command line does
  return validate(config)


def from_stored(stored: dict) -> ConfigDict:
  """A config saved with a checkpoint, on top of today's base config: keys added since it was
  written take their documented defaults, the stored values win everywhere else."""

  def merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
      out[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out

  return ConfigDict(merge(base_config().to_dict(), stored))
