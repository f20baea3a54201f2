"""Tokenizers (HF `tokenizers`): a byte-level BPE trained on our data, or any `tokenizer.json`.

Every tokenizer carries the special tokens the framework needs, by role:

* `pad`, `bos`, `eos`, `mask`;
* `K` reserved, distinct padding tokens `<|pad_0|> .. <|pad_{K-1}|>` (K = 7 by default) for
  rainbow padding of instruction data (Kim et al., arXiv 2510.03680).

Roles are found by name in the tokenizer's vocabulary (`[MASK]`, `[CLS]`, `[SEP]`, `[PAD]` for
BERT's WordPiece, `<|endoftext|>` for GPT-2, ...), can be overridden in the config, and any role
still missing is added as a new special token. The tokenizer is saved as one standard
`tokenizer.json`, which is what every later stage (training, checkpoints, sampling) loads.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Iterable, Mapping, Sequence

import numpy as np
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from dlm.errors import DlmError

ROLES = ("pad", "bos", "eos", "mask")
_OWN = {"pad": "<|pad|>", "bos": "<|bos|>", "eos": "<|eos|>", "mask": "<|mask|>"}
_KNOWN = {
    "pad": ("<|pad|>", "[PAD]", "<pad>"),
    "bos": ("<|bos|>", "[CLS]", "<s>", "<|begin_of_text|>", "<|endoftext|>"),
    "eos": ("<|eos|>", "[SEP]", "</s>", "<|end_of_text|>", "<|endoftext|>"),
    "mask": ("<|mask|>", "[MASK]", "<mask>"),
}


# Longest text handed to the tokenizer in one call: HF tokenizers keep some 250 bytes per
# character of an encoding (offsets, word ids, ...), so a 7.5 MB line took 2 GB at once.
MAX_PIECE = 1 << 16
# Longest piece BPE training sees: its merges cost grows with the square of a word's length,
# and a line without whitespace (minified code, base64) is one word to the pre-tokenizer.
MAX_BPE_PIECE = 1 << 12


_BOUNDARY = re.compile(r"(?<=\S)[ \n](?=\S)")


def pieces(text: str, limit: int) -> Iterable[str]:
  """`text` cut into consecutive pieces of at most `limit` characters that join back to it.

  Each cut falls, where one exists in the second half of the window, just before a single space
  or newline between two non-space characters (`a| b`): a place where byte-level (GPT-2, Qwen,
  Llama 3) and whitespace (BERT) pre-tokenizers start a new pre-token anyway, so the ids are
  those of the whole text. Only a window without such a place (one word longer than
  `limit / 2`) is cut where the window ends."""
  start, n = 0, len(text)
  while n - start > limit:
    lo, end = start + limit // 2, start + limit
    cut = end
    for m in _BOUNDARY.finditer(text, lo, end):
      cut = m.start()
    yield text[start:cut]
    start = cut
  yield text[start:]


def reserved_pad_token(k: int) -> str:
  return f"<|pad_{k}|>"


class Tokenizer:
  """A HF tokenizer plus the ids of the framework's special tokens."""

  def __init__(self, hf: tokenizers.Tokenizer, num_reserved_pads: int = 7,
               overrides: Mapping[str, str] | None = None, stop_tokens: Sequence[str] = ()):
    # A tokenizer.json may carry truncation and padding settings for its model's inputs
    # (all-MiniLM-L6-v2: truncate and pad to 128); documents are never cut nor padded here.
    hf.no_truncation()
    hf.no_padding()
    # A special token's spelling inside a text is text (a runtime setting: not saved, so the
    # tokenizer.json and its fingerprint are unchanged). Control tokens enter by id only.
    hf.encode_special_tokens = True
    self.hf = hf
    overrides = {k: v for k, v in (overrides or {}).items() if v}
    unknown = set(overrides) - set(ROLES)
    if unknown:
      raise DlmError(f"unknown special-token role(s) {sorted(unknown)}; roles are {list(ROLES)}")
    vocab = hf.get_vocab(with_added_tokens=True)
    ids = {}
    for role in ROLES:
      if role in overrides:
        if overrides[role] not in vocab:
          raise DlmError(f"special token {overrides[role]!r} for role {role!r} is not in the "
                         "tokenizer's vocabulary")
        name = overrides[role]
      else:
        name = next((n for n in _KNOWN[role] if n in vocab), None)
        if name is None:
          name = _OWN[role]
          hf.add_special_tokens([tokenizers.AddedToken(name, special=True, normalized=False)])
          vocab = hf.get_vocab(with_added_tokens=True)
      ids[role] = vocab[name]
    pads = []
    for k in range(num_reserved_pads):
      name = reserved_pad_token(k)
      if name not in vocab:
        hf.add_special_tokens([tokenizers.AddedToken(name, special=True, normalized=False)])
        vocab = hf.get_vocab(with_added_tokens=True)
      pads.append(vocab[name])
    self.pad_id, self.bos_id, self.eos_id, self.mask_id = (ids[r] for r in ROLES)
    self.reserved_pad_ids = tuple(pads)
    missing = [t for t in stop_tokens if t not in vocab]
    if missing:
      raise DlmError(f"stop token {missing[0]!r} is not in the tokenizer's vocabulary")
    # Tokens that end a generation besides eos and pad (a chat model's end of turn).
    self.stop_ids = tuple(vocab[t] for t in stop_tokens)

  # Construction ---------------------------------------------------------------------------

  @classmethod
  def from_file(cls, path: str, num_reserved_pads: int = 7,
                overrides: Mapping[str, str] | None = None,
                stop_tokens: Sequence[str] = ()) -> "Tokenizer":
    path = os.path.expanduser(path)
    if os.path.isdir(path):  # a model directory: its tokenizer.json
      inside = os.path.join(path, "tokenizer.json")
      if not os.path.isfile(inside):
        raise DlmError(f"data.tokenizer.path {path!r} is a directory without a tokenizer.json; "
                       "give the tokenizer.json file")
      path = inside
    if not os.path.isfile(path):
      raise DlmError(f"tokenizer file {path!r} does not exist")
    try:
      hf = tokenizers.Tokenizer.from_file(path)
    except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
      raise DlmError(f"tokenizer file {path!r} is not a valid tokenizer.json ({e})") from None
    return cls(hf, num_reserved_pads, overrides, stop_tokens)

  @classmethod
  def train_bpe(cls, texts: Iterable[str], vocab_size: int, num_reserved_pads: int = 7,
                length: int | None = None) -> "Tokenizer":
    """Trains a byte-level BPE (GPT-2 style pre-tokenisation, no normaliser: decoding is exact)."""
    special = [_OWN[r] for r in ROLES] + [reserved_pad_token(k) for k in range(num_reserved_pads)]
    if vocab_size < 256 + len(special):
      raise DlmError(f"data.tokenizer.vocab_size={vocab_size} is below the 256 byte symbols plus "
                     f"{len(special)} special tokens")
    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator((p for t in texts for p in pieces(t, MAX_BPE_PIECE)),
                           trainer=trainer, length=length)
    return cls(hf, num_reserved_pads)

  def save(self, path: str) -> None:
    """Writes `tokenizer.json` atomically."""
    tmp = f"{path}.tmp-{os.getpid()}"
    self.hf.save(tmp)
    os.replace(tmp, path)

  # Use ------------------------------------------------------------------------------------

  @property
  def vocab_size(self) -> int:
    return self.hf.get_vocab_size(with_added_tokens=True)

  @property
  def fingerprint(self) -> str:
    """Identifies the exact vocabulary: checkpoints refuse a tokenizer with another one."""
    return hashlib.sha256(self.hf.to_str().encode("utf-8")).hexdigest()[:16]

  def encode(self, text: str) -> np.ndarray:
    """Token ids of a text. Text is always text: a special token's spelling in it (`<|eos|>`,
    `[MASK]`) is encoded as characters, never as the control token. A text longer than
    `MAX_PIECE` characters is encoded in pieces (`pieces`), so memory stays bounded by the
    piece, not by the longest line or document."""
    if len(text) <= MAX_PIECE:
      return np.asarray(self.hf.encode(text, add_special_tokens=False).ids, dtype=np.int32)
    out, group = [], []
    for piece in pieces(text, MAX_PIECE):  # a few pieces at a time, in parallel
      group.append(piece)
      if len(group) == 4:
        out += [np.asarray(e.ids, np.int32) for e in self.hf.encode_batch(group, False)]
        group = []
    out += [np.asarray(e.ids, np.int32) for e in self.hf.encode_batch(group, False)]
    return np.concatenate(out)

  def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
    if any(len(t) > MAX_PIECE for t in texts):
      return [self.encode(t) for t in texts]
    encodings = self.hf.encode_batch(texts, add_special_tokens=False)
    return [np.asarray(e.ids, dtype=np.int32) for e in encodings]

  def encode_template(self, text: str) -> np.ndarray:
    """Token ids of a rendered template (a chat template's output), where special tokens'
    spellings are control tokens, as `transformers`' `apply_chat_template` encodes it (a
    message that spells one gets that control token there too)."""
    self.hf.encode_special_tokens = False
    try:
      return np.asarray(self.hf.encode(text, add_special_tokens=False).ids, dtype=np.int32)
    finally:
      self.hf.encode_special_tokens = True

  def decode(self, ids, skip_special_tokens: bool = False) -> str:
    return self.hf.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

  def token(self, i: int) -> str:
    return self.hf.id_to_token(int(i))

  def characters(self) -> set[str]:
    """Every character a text decoded from this vocabulary can hold that its tokens spell
    whole (a byte-level token that is part of a character decodes to U+FFFD: left out)."""
    special = {t.content for t in self.hf.get_added_tokens_decoder().values() if t.special}
    texts = self.hf.decode_batch([[i] for i in range(self.vocab_size)],
                                 skip_special_tokens=False)
    return {c for t in texts if t not in special for c in t} - {"\ufffd"}

  def cannot_encode(self, characters) -> list[str]:
    """The characters (whitespace aside: a normalizer's business) that this tokenizer drops
    or maps to its unknown token, sorted."""
    unk = getattr(self.hf.model, "unk_token", None)
    unk_id = self.hf.token_to_id(unk) if unk else None
    chars = sorted(c for c in characters if not c.isspace())
    encodings = self.hf.encode_batch(chars, add_special_tokens=False)
    return [c for c, e in zip(chars, encodings) if not e.ids or unk_id in e.ids]
