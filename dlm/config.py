"""The base config: every key with its documented default.

Experiment configs in `configs/` start from `base_config()` and change what they need; users
change keys on the command line (`--config.data.seq_len=128`). A key that is not here is an
error, not a silent no-op.
"""

from ml_collections import ConfigDict


def base_config() -> ConfigDict:
  config = ConfigDict()

  # Data: where documents come from, how they are tokenized, packed and batched.
  config.data = ConfigDict(dict(
      # One line selects the source: tfds:NAME (any TFDS dataset, incl. the embedded
      # python_stdlib/docs and python_stdlib/code), text:GLOB, or jsonl:GLOB.
      dataset="tfds:python_stdlib/docs",
      data_dir="",  # prepared datasets and cached tokenizers; '' = TFDS default (TFDS_DATA_DIR)
      text_feature="text",  # the feature (TFDS) or JSON field holding the document text
      train_split="train",
      eval_split="validation",  # TFDS split syntax works: 'test', 'train[:1%]', ...
      document_per="file",  # text:GLOB only: 'file' or 'line'
      validation_fraction=0.05,  # text/jsonl without a {split} in the glob: hash split
      seq_len=256,
      packing="concat",  # 'concat' (join with eos, cut into rows) or 'pad' (a document per row)
      add_bos=False,  # put bos before every document
      seed=0,  # document shuffling
      prefetch=2,  # batches prepared ahead in a background thread (0 = none)
      tokenizer=ConfigDict(dict(
          path="",  # an existing tokenizer.json; '' = train a byte-level BPE on train_split
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

  config.train = ConfigDict(dict(
      batch_size=32,  # global, over all processes
  ))
  return config


def validate(config: ConfigDict) -> ConfigDict:
  """Checks values that would otherwise fail deep inside JAX or grain; raises DlmError."""
  from dlm.errors import DlmError  # pylint: disable=g-import-not-at-top

  d = config.data
  if not isinstance(d.seq_len, int) or d.seq_len <= 0:
    raise DlmError(f"data.seq_len must be a positive integer, got {d.seq_len!r}")
  if d.packing not in ("concat", "pad"):
    raise DlmError(f"data.packing must be 'concat' or 'pad', got {d.packing!r}")
  if d.document_per not in ("file", "line"):
    raise DlmError(f"data.document_per must be 'file' or 'line', got {d.document_per!r}")
  if not 0.0 <= d.validation_fraction < 1.0:
    raise DlmError(f"data.validation_fraction must be in [0, 1), got {d.validation_fraction}")
  if config.train.batch_size <= 0:
    raise DlmError(f"train.batch_size must be positive, got {config.train.batch_size}")
  return config


def from_file(path: str, **overrides) -> ConfigDict:
  """Loads `get_config()` from a config file, applies dotted overrides, validates, locks."""
  import importlib.util  # pylint: disable=g-import-not-at-top

  spec = importlib.util.spec_from_file_location("dlm_user_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.lock()
  for key, value in overrides.items():
    parent = config
    *heads, last = key.split(".")
    for h in heads:
      parent = parent[h]
    parent[last] = value  # raises on an unknown key, as the command line does
  return validate(config)
