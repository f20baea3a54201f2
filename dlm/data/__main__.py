"""Prepare and inspect a dataset: `python -m dlm.data --config=configs/<name>.py`.

Prepares the dataset (array_record) and the tokenizer if needed, then prints one JSON line:
the dataset, documents / tokens / bytes per split, bytes per token, the vocabulary size, whether
every validation document decodes back to its exact text, and a decoded example.

With `data.source_feature` set (source -> target pairs) the splits count pairs, source and
target tokens and how many of each a row truncates, and the example shows the pair's texts, the
length of its given prefix (`[bos] source [eos]`) and the decoded row.
"""

from __future__ import annotations

import json

import numpy as np
from absl import app, flags

from dlm import cli
from dlm import config as config_lib
from dlm.data import inputs, pipeline, sources


def split_stats(docs, tokenizer, check_roundtrip: bool = False, chunk: int = 256) -> dict:
  n_tokens = n_bytes = 0
  exact = True
  for start in range(0, len(docs), chunk):
    texts = docs[start:start + chunk]
    for text, ids in zip(texts, tokenizer.encode_batch(texts)):
      n_tokens += len(ids) + 1  # + the eos that closes every document
      n_bytes += len(text.encode("utf-8"))
      if check_roundtrip and tokenizer.decode(ids) != text:
        exact = False
  stats = {"documents": len(docs), "tokens": n_tokens, "bytes": n_bytes}
  if check_roundtrip:
    stats["roundtrip_exact"] = exact
  return stats


def pair_stats(pairs, tokenizer, seq_len: int, source_len: int,
               check_roundtrip: bool = False, chunk: int = 256) -> dict:
  """Pairs, tokens (both sides, with bos and eos), bytes, and rows that cut source / target."""
  n_tokens = n_bytes = n_source = n_target = cut_source = cut_target = 0
  exact = True
  for start in range(0, len(pairs), chunk):
    texts = [text for pair in pairs[start:start + chunk] for text in pair]
    ids = tokenizer.encode_batch(texts)
    for source, target, src, tgt in zip(texts[::2], texts[1::2], ids[::2], ids[1::2]):
      n_source += len(src)
      n_target += len(tgt)
      n_tokens += len(src) + len(tgt) + 3
      n_bytes += len(source.encode("utf-8")) + len(target.encode("utf-8"))
      cut_source += len(src) > source_len
      cut_target += len(tgt) > seq_len - min(len(src), source_len) - 3
      if check_roundtrip and (tokenizer.decode(src), tokenizer.decode(tgt)) != (source, target):
        exact = False
  stats = {"documents": len(pairs), "tokens": n_tokens, "bytes": n_bytes,
           "source_tokens": n_source, "target_tokens": n_target,
           "sources_truncated": cut_source, "targets_truncated": cut_target}
  if check_roundtrip:
    stats["roundtrip_exact"] = exact
  return stats


def pair_example(pairs, tokenizer, seq_len: int, source_len: int, padding: str = "eos") -> dict:
  """The first pair of a split: its texts, the given prefix length and the decoded row."""
  record = pairs.record(0)
  source, target = pairs[0]
  row = pipeline.pair_row(tokenizer, tokenizer.encode(source), tokenizer.encode(target),
                          seq_len=seq_len, source_len=source_len, padding=padding)
  given = int(row["given"].sum())
  tokens = row["tokens"]
  after = tokens[given:]
  stops = np.isin(after, [tokenizer.eos_id, *tokenizer.reserved_pad_ids])
  fill = int(stops[::-1].cumprod().sum())  # the trailing eos (and rainbow pad) run
  n_target = len(after) - fill
  return {
      "key": record.get("path", "0"),
      "source_head": source[:400],
      "target": target,
      "given_len": given,
      "target_len": n_target,
      "eos_fill": fill,
      "prefix_decoded_head": tokenizer.decode(tokens[:min(given, 64)]),
      "target_decoded": tokenizer.decode(after[:n_target]),
  }


STREAMED_DOCUMENTS = 1000  # a streamed split's documents counted (it is not read whole)


def _split(data, split: str, pairs: bool = False):
  """A split to count: the prepared one, or a streamed one's first documents."""
  docs = inputs.open_pairs(data, split) if pairs else sources.open_split(data, split)
  return docs[:STREAMED_DOCUMENTS] if data.streaming else docs


def inspect(config) -> dict:
  config_lib.validate(config)
  data = config.data
  tokenizer = inputs.load_tokenizer(data)
  if data.source_feature:
    return inspect_pairs(config, tokenizer)
  splits = {}
  for split in (data.train_split, data.eval_split):
    docs = _split(data, split)
    splits[split] = split_stats(docs, tokenizer, check_roundtrip=split == data.eval_split)
  example = sources.open_split(data, data.eval_split).record(0)
  ids = tokenizer.encode(example[data.text_feature])[:64]
  total_tokens = sum(s["tokens"] for s in splits.values())
  total_bytes = sum(s["bytes"] for s in splits.values())
  return {
      "dataset": sources.dataset_name(data),
      "source": data.dataset,
      **_streamed(data),
      "splits": splits,
      "bytes_per_token": round(total_bytes / total_tokens, 4),
      "vocab_size": tokenizer.vocab_size,
      "tokenizer": data.tokenizer.path or inputs.bpe_cache_path(data),
      "example": {
          "key": example.get("path", "0"),
          "tokens_head": [tokenizer.token(i) for i in ids[:16]],
          "decoded_head": tokenizer.decode(ids),  # its first 64 tokens
      },
  }


def inspect_pairs(config, tokenizer) -> dict:
  data = config.data
  source_len = config_lib.source_budget(data.seq_len, data.source_len)
  splits = {}
  for split in (data.train_split, data.eval_split):
    pairs = _split(data, split, pairs=True)
    splits[split] = pair_stats(pairs, tokenizer, data.seq_len, source_len,
                               check_roundtrip=split == data.eval_split)
  total_tokens = sum(s["tokens"] for s in splits.values())
  total_bytes = sum(s["bytes"] for s in splits.values())
  return {
      "dataset": sources.dataset_name(data),
      "source": data.dataset,
      **_streamed(data),
      "pairs": {"source_feature": data.source_feature, "target_feature": data.target_feature,
                "seq_len": data.seq_len, "source_len": source_len},
      "splits": splits,
      "bytes_per_token": round(total_bytes / total_tokens, 4),
      "vocab_size": tokenizer.vocab_size,
      "tokenizer": data.tokenizer.path or inputs.bpe_cache_path(data),
      "example": pair_example(inputs.open_pairs(data, data.eval_split), tokenizer, data.seq_len,
                              source_len, data.response_padding),
  }


def _streamed(data) -> dict:
  return {"streamed": f"counts of each split's first {STREAMED_DOCUMENTS} documents"
          } if data.streaming else {}


def main(argv):
  del argv
  with cli.user_errors():
    with cli.stdout_to_stderr():
      result = inspect(cli.config())
    print(json.dumps(result))


if __name__ == "__main__":
  cli.define_config_flag()
  flags.adopt_module_key_flags(cli)
  app.run(main, flags_parser=cli.parse_flags)
