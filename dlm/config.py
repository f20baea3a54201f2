"""The base config: every key with its documented default.

Experiment configs in `configs/` start from `base_config()` and change what they need; users
change keys on the command line (`--config.data.seq_len=128`). A key that is not here is an
error, not a silent no-op.

The sections every run has (`data`, `mesh`, `model`, `train`) are documented here; each family
section (`diffusion`, `continuous`, `ccdd`, ...) is generated from the dataclass its family
registers (`dlm/registry.py`), which documents its keys and checks its values. `validate`
checks a whole config before any work; `load_file` loads a config file, naming whatever is
wrong with it in one line.
"""

import dataclasses
import importlib.util
import math
import os

from ml_collections import ConfigDict

from dlm import registry
from dlm.errors import DlmError, one_line

# The names `model.*` keys accept (the backbone maps them to what they mean).
REMATS = ("none", "full", "dots", "dots_all")
ATTENTIONS = ("bidirectional", "causal", "block_causal")
TIME_CONDITIONINGS = ("adaln_zero", "none")
DTYPES = ("float32", "bfloat16")
ATTENTION_IMPLS = ("xla", "cudnn", "auto")
PACKINGS = ("concat", "pad")
PADDINGS = ("eos", "rainbow")
NORMS = ("rms", "layer")
MLPS = ("swiglu", "gelu")
POSITIONS = ("rotary", "learned")
ROPE_LAYOUTS = ("half", "interleaved")
TIME_INPUTS = ("t", "sigma_loglinear", "zero")


@dataclasses.dataclass(frozen=True)
class Backbone:
  """The `model` section's backbone keys: their defaults and checks (the one source of both).
  `models.transformer.TransformerConfig` extends it with what a family sets itself."""
  width: int = 256
  depth: int = 6
  heads: int = 4
  mlp_ratio: float = 4.0  # SwiGLU hidden width = mlp_ratio * width
  time_conditioning: str = "adaln_zero"  # TIME_CONDITIONINGS; 'none': MD4 (masked models)
  cond_width: int = 128  # width of the time embedding feeding adaLN
  attention: str = "bidirectional"  # ATTENTIONS
  block_size: int = 0  # block_causal only
  rope_theta: float = 10_000.0
  head_init_std: float = 0.0  # output projection init std; 0 = zeros (DiT / MDLM final layer)
  tie_embeddings: bool = False  # output projection = input embedding table, transposed
  dropout: float = 0.0
  dtype: str = "float32"  # matmul compute dtype (DTYPES); parameters stay float32
  remat: str = "none"  # rematerialisation policy (REMATS)
  scan_layers: bool = False  # nnx.scan over layers: one compiled layer, faster compiles
  attention_impl: str = "auto"  # 'xla' | 'cudnn' (GPU flash attention) | 'auto' (cuDNN on
  # a GPU in bfloat16 / float16 where it accepts the call, else XLA)
  # Low-rank adapters W + (lora_alpha / lora_rank) A B on every block's dense weights
  # (attention qkv/out, MLP in/down); B starts at zero, so an adapted model starts equal
  # to its base. 0 = none (no adapter parameters at all: old checkpoints load). Train
  # only them with train.freeze='^(?!.*lora_)' and train.init_from=BASE_WORKDIR.
  lora_rank: int = 0
  lora_alpha: float = 16.0
  # Released architectures (dlm/convert/): each default is dlm's own backbone.
  vocab_size: int = 0  # embedding rows; 0 = the tokenizer's (a converted model may have more)
  kv_heads: int = 0  # key/value heads (grouped-query attention, Dream); 0 = heads
  qkv_bias: bool = False  # biases on q, k and v (Qwen2 / Dream; GPT-2)
  attn_out_bias: bool = False  # bias on the attention output projection (GPT-2)
  norm: str = "rms"  # NORMS: 'rms' (RMSNorm) | 'layer' (LayerNorm: GPT-2, MDLM's DiT)
  norm_bias: bool = False  # 'layer' only: a bias after the scale (GPT-2; MDLM has none)
  norm_eps: float = 1e-6  # LLaDA 1e-5, Dream 1e-6, GPT-2 1e-5, MDLM 1e-5
  mlp: str = "swiglu"  # MLPS: 'swiglu' | 'gelu' (tanh-approximate GELU: GPT-2, MDLM)
  mlp_dim: int = 0  # MLP hidden width; 0 = mlp_ratio * width
  mlp_bias: bool = False  # biases on the MLP's two projections (GPT-2, MDLM)
  positions: str = "rotary"  # POSITIONS: 'rotary' | 'learned' (GPT-2: max_positions rows)
  max_positions: int = 0  # 'learned' only: rows of the position table
  rope_layout: str = "half"  # ROPE_LAYOUTS: 'half' (rotate_half: Llama, Qwen2, LLaDA,
  # NeoX) | 'interleaved' (pairs 2i, 2i+1: GPT-J, Meta's original Llama)
  head_bias: bool = True  # a bias on the output head (LLaDA, Dream and GPT-2 have none)
  tied_head_scale: float = 0.0  # tie_embeddings: logits = h E^T scale; 0 = width^-0.5 / 0.02
  # (unit-scale logits at init); GPT-2: 1
  shift_logits: bool = False  # Dream: the network's output at i predicts token i + 1; the
  # head shifts it back (position 0 keeps its own), so every family sees position i at i
  time_bias: bool = False  # biases in the time MLP and the adaLN modulations (MDLM's DiT)
  # What the time embedding reads: 't' (dlm's time in [0, 1], scaled by 1000 as DiT does);
  # 'sigma_loglinear' (MDLM: sigma = -log(1 - (1 - eps) t), eps = diffusion.eps, unscaled);
  # 'zero' (MDLM's released OWT model, time_conditioning=False: sigma = 0 always)
  time_input: str = "t"
  param_dtype: str = "float32"  # DTYPES: parameter storage; bfloat16 halves inference memory

  def __post_init__(self):
    _check_positive_ints(self, "model", ("width", "depth", "heads", "cond_width"))
    if self.width % self.heads or (self.width // self.heads) % 2:
      raise DlmError(f"model.width={self.width} must split into model.heads={self.heads} "
                     "heads of even size")
    if not _is_number(self.mlp_ratio) or self.mlp_ratio <= 0:
      raise DlmError(f"model.mlp_ratio must be a positive number, got {self.mlp_ratio!r}")
    if not _is_number(self.dropout) or not 0.0 <= self.dropout < 1.0:
      raise DlmError(f"model.dropout must be in [0, 1), got {self.dropout!r}")
    for key, allowed in (("remat", REMATS), ("attention", ATTENTIONS),
                         ("time_conditioning", TIME_CONDITIONINGS), ("dtype", DTYPES),
                         ("attention_impl", ATTENTION_IMPLS), ("norm", NORMS), ("mlp", MLPS),
                         ("positions", POSITIONS), ("rope_layout", ROPE_LAYOUTS),
                         ("time_input", TIME_INPUTS), ("param_dtype", DTYPES)):
      if getattr(self, key) not in allowed:
        raise DlmError(f"model.{key} must be one of {allowed}, got {getattr(self, key)!r}")
    if self.attention == "block_causal" and self.block_size <= 0:
      raise DlmError("model.attention='block_causal' needs model.block_size > 0")
    if not _is_int(self.lora_rank) or self.lora_rank < 0:
      raise DlmError(f"model.lora_rank must be a non-negative integer, got {self.lora_rank!r}")
    for key in ("vocab_size", "kv_heads", "mlp_dim", "max_positions"):
      if not _is_int(getattr(self, key)) or getattr(self, key) < 0:
        raise DlmError(f"model.{key} must be a non-negative integer, got "
                       f"{getattr(self, key)!r}")
    if self.kv_heads and self.heads % self.kv_heads:
      raise DlmError(f"model.kv_heads={self.kv_heads} must divide model.heads={self.heads}")
    if self.positions == "learned" and not self.max_positions:
      raise DlmError("model.positions='learned' needs model.max_positions > 0")
    if not _is_number(self.norm_eps) or self.norm_eps <= 0:
      raise DlmError(f"model.norm_eps must be a positive number, got {self.norm_eps!r}")
    if not _is_number(self.tied_head_scale) or self.tied_head_scale < 0:
      raise DlmError(f"model.tied_head_scale must be a non-negative number, got "
                     f"{self.tied_head_scale!r}")
    if self.lora_rank and self.lora_alpha <= 0:
      raise DlmError(f"model.lora_alpha must be positive, got {self.lora_alpha!r}")


def base_config() -> ConfigDict:
  config = ConfigDict()

  # Data: where documents come from, how they are tokenized, packed and batched.
  config.data = ConfigDict(dict(
      # One line selects the source: tfds:NAME (any TFDS dataset, incl. the embedded
      # python_stdlib/docs and python_stdlib/code), text:GLOB, jsonl:GLOB, parquet:GLOB,
      # arrow:GLOB, or hf:PATH / hf:OWNER/NAME[/CONFIG] (Hugging Face datasets).
      dataset="tfds:python_stdlib/docs",
      data_dir="",  # prepared datasets and cached tokenizers; '' = TFDS default (TFDS_DATA_DIR)
      # hf: only: read the dataset as it arrives (datasets' streaming mode for a hub dataset)
      # instead of preparing it; shuffled within windows of shuffle_window documents.
      streaming=False,
      shuffle_window=10_000,
      # Processes that prepare a text/jsonl/parquet/arrow/hf: source (dlm/data/shards.py);
      # 0 = one per CPU for a source of 64 MB or more, else one.
      prepare_workers=0,
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
          # Tokens that also end a generation (a chat model's end of turn: <|eot_id|>).
          stop_tokens=(),
          # A Jinja chat template (HF tokenizer_config.json's), rendered by sample.py --chat;
          # '' = none. Set by `python -m dlm.convert` for instruct models.
          chat_template="",
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

  # Model: the family and its backbone, whose keys `Backbone` below documents and checks.
  config.model = ConfigDict(dict(
      # 'masked' | 'continuous' | 'neodiff' | 'autoregressive' | 'ccdd' | 'cosmos_ae' |
      # 'cosmos' | 'any_order' | 'joint_head' (the registered families, dlm/registry.py;
      # 'joint_head': ADJUST's sampler head on a frozen masked model whose architecture the
      # other model keys describe, configs/joint_head.py)
      family="masked",
      **dataclasses.asdict(Backbone()),
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
      # Micro-batches per step (the same update as the full batch); 0 = chosen from the
      # compiled step's memory estimate and the platform (dlm/train/micro_batches.py).
      grad_accum=0,
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

  # The families' sections (`diffusion`, `continuous`, `ccdd`, ...), each generated from the
  # dataclass its family registers (dlm/registry.py): their keys are documented there.
  for name, cls in registry.sections().items():
    config[name] = ConfigDict(dataclasses.asdict(cls()))
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
    value = section[key] if isinstance(section, ConfigDict) else getattr(section, key)
    if not _is_int(value) or value <= 0:
      raise DlmError(f"{name}.{key} must be a positive integer, got {value!r}")


def source_budget(seq_len: int, source_len: int) -> int:
  """A pair row's source budget in tokens (`data.source_len`, 0 = `seq_len // 2`); checks that
  bos, the source, eos, at least one target token and its eos fit in `seq_len`."""
  if not _is_int(seq_len) or seq_len <= 0:
    raise DlmError(f"data.seq_len must be a positive integer, got {seq_len!r}")
  if not _is_int(source_len) or source_len < 0:
    raise DlmError(f"data.source_len must be a non-negative integer, got {source_len!r}")
  n = source_len or seq_len // 2
  if n < 1 or n + 3 > seq_len:
    raise DlmError(
        f"data.source_len={n} leaves no room for a target in data.seq_len={seq_len}: a row "
        "holds bos, the source, eos, at least one target token and its eos")
  return n


def options(cls, section):
  """A config section as its dataclass (`cls`): the one way sections become options. Keys the
  dataclass does not have (an older checkpoint's) are left out; its checks run."""
  names = {f.name for f in dataclasses.fields(cls)}
  return cls(**{k: v for k, v in dict(section).items() if k in names})


def _check_data(data) -> None:
  if not _is_int(data.seq_len) or data.seq_len <= 0:
    raise DlmError(f"data.seq_len must be a positive integer, got {data.seq_len!r}")
  if data.source_feature:
    source_budget(data.seq_len, data.source_len)
  elif not _is_int(data.source_len) or data.source_len < 0:
    raise DlmError(f"data.source_len must be a non-negative integer, got {data.source_len!r}")
  if data.packing not in PACKINGS:
    raise DlmError(f"data.packing must be one of {PACKINGS}, got {data.packing!r}")
  if data.document_per not in ("file", "line"):
    raise DlmError(f"data.document_per must be 'file' or 'line', got {data.document_per!r}")
  if not 0.0 <= data.validation_fraction < 1.0:
    raise DlmError(f"data.validation_fraction must be in [0, 1), got "
                   f"{data.validation_fraction}")
  if data.source_feature and (not data.target_feature
                              or data.target_feature == data.source_feature):
    raise DlmError(f"data.target_feature={data.target_feature!r} must name a feature other than "
                   f"data.source_feature={data.source_feature!r}")
  if data.pretokenized and (data.source_feature or not data.tokenizer.path):
    raise DlmError("data.pretokenized needs data.tokenizer.path (the tokenizer of the ids) "
                   "and no data.source_feature")
  if data.response_padding not in PADDINGS:
    raise DlmError(f"data.response_padding must be one of {PADDINGS}, got "
                   f"{data.response_padding!r}")
  if data.response_padding == "rainbow" and data.tokenizer.num_reserved_pads < 1:
    raise DlmError("data.response_padding='rainbow' needs data.tokenizer.num_reserved_pads >= 1")
  stops = data.tokenizer.stop_tokens
  if not isinstance(stops, (tuple, list)) or not all(isinstance(t, str) and t for t in stops):
    raise DlmError(f"data.tokenizer.stop_tokens must be a list of token spellings, got "
                   f"{stops!r}")
  if not isinstance(data.tokenizer.chat_template, str):
    raise DlmError("data.tokenizer.chat_template must be a string (a Jinja template)")
  for key in ("streams", "prefetch", "prepare_workers"):
    if not _is_int(data[key]) or data[key] < 0:
      raise DlmError(f"data.{key} must be a non-negative integer, got {data[key]!r}")
  if not isinstance(data.streaming, bool):
    raise DlmError(f"data.streaming must be True or False, got {data.streaming!r}")
  if not _is_int(data.shuffle_window) or data.shuffle_window <= 0:
    raise DlmError(f"data.shuffle_window must be a positive integer, got "
                   f"{data.shuffle_window!r}")
  if data.streaming and not data.dataset.startswith("hf:"):
    raise DlmError(f"data.streaming reads hf: sources only, not {data.dataset!r}; set "
                   "data.streaming=False to prepare it")
  if data.streaming and not data.tokenizer.path and not data.tokenizer.train_documents:
    raise DlmError("data.streaming with a BPE trained on the data needs "
                   "data.tokenizer.train_documents > 0 (a streamed corpus is not read whole "
                   "to train it), or data.tokenizer.path")


def _check_train(train) -> None:
  _check_positive_ints(train, "train", ("batch_size", "steps", "log_every", "eval_every",
                                        "checkpoint_every", "keep_checkpoints",
                                        "max_nonfinite_steps"))
  for key in ("eval_batches", "warmup_steps", "grad_accum"):
    if not _is_int(train[key]) or train[key] < 0:
      raise DlmError(f"train.{key} must be a non-negative integer, got {train[key]!r}")
  if not _is_number(train.lr) or train.lr <= 0:
    raise DlmError(f"train.lr must be a positive number, got {train.lr!r}")
  for key in ("grad_clip", "weight_decay", "min_lr_ratio"):
    if not _is_number(train[key]) or train[key] < 0:
      raise DlmError(f"train.{key} must be a non-negative number, got {train[key]!r}")
  for key in ("b1", "b2", "ema_decay"):
    if not _is_number(train[key]) or not 0.0 <= train[key] < 1.0:
      raise DlmError(f"train.{key} must be in [0, 1), got {train[key]!r}")
  if train.lr_schedule not in ("cosine", "constant"):
    raise DlmError(f"train.lr_schedule must be 'cosine' or 'constant', got "
                   f"{train.lr_schedule!r}")
  if train.grad_accum and train.batch_size % train.grad_accum:
    raise DlmError(f"train.grad_accum={train.grad_accum} must divide train.batch_size="
                   f"{train.batch_size}")
  if train.init_which not in ("ema", "params"):
    raise DlmError(f"train.init_which must be 'ema' or 'params', got {train.init_which!r}")


def _check_model(model) -> None:
  registry.get(model.family)  # a DlmError naming the known families
  options(Backbone, model)


def validate(config: ConfigDict) -> ConfigDict:
  """Checks every value before any work (values that would otherwise fail deep inside JAX or
  grain, or silently mean something else); raises DlmError. The family sections are checked by
  their dataclasses, then by the family's own cross-section `check`."""
  _check_mesh_shape(config.mesh.shape)
  _check_data(config.data)
  _check_train(config.train)
  _check_model(config.model)
  for name, cls in registry.sections().items():
    if name in config:
      options(cls, config[name])
  family = registry.get(config.model.family)
  if family.check is not None:
    family.check(config)
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


def adopt(config: ConfigDict, stored, keys) -> None:
  """Copies `keys` ('section.key' or a whole 'section') from another run's stored config into
  `config` (a stage adopting its predecessor's settings; keys the stored config lacks keep
  their value here)."""
  stored = stored.to_dict() if isinstance(stored, ConfigDict) else stored
  for key in keys:
    *parents, last = key.split(".")
    source, target = stored, config
    for name in parents:
      source, target = source.get(name, {}), target[name]
    if last not in source:
      continue
    value = source[last]
    if isinstance(value, dict):
      target[last].update({k: v for k, v in value.items() if k in target[last]})
    else:
      target[last] = value


def from_stored(stored: dict) -> ConfigDict:
  """A config saved with a checkpoint, on top of today's base config: keys added since it was
  written take their documented defaults, the stored values win everywhere else."""

  def merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
      out[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out

  return ConfigDict(merge(base_config().to_dict(), stored))
