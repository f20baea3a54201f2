"""Prepare and inspect a dataset: `python -m dlm.data --config=configs/<name>.py`.

Prepares the dataset (array_record) and the tokenizer if needed, then prints one JSON line:
the dataset, documents / tokens / bytes per split, bytes per token, the vocabulary size, whether
every validation document decodes back to its exact text, and a decoded example.
"""

from __future__ import annotations

import json

from absl import app

from dlm import cli
from dlm.data import inputs, sources


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


def inspect(config) -> dict:
  d = config.data
  tokenizer = inputs.load_tokenizer(d)
  splits = {}
  for split in (d.train_split, d.eval_split):
    docs = sources.open_split(d, split)
    splits[split] = split_stats(docs, tokenizer, check_roundtrip=split == d.eval_split)
  eval_docs = sources.open_split(d, d.eval_split)
  example = eval_docs.record(0)
  ids = tokenizer.encode(example[d.text_feature])[:64]
  total_tokens = sum(s["tokens"] for s in splits.values())
  total_bytes = sum(s["bytes"] for s in splits.values())
  return {
      "dataset": sources.builder(d).info.full_name,
      "source": d.dataset,
      "splits": splits,
      "bytes_per_token": round(total_bytes / total_tokens, 4),
      "vocab_size": tokenizer.vocab_size,
      "tokenizer": d.tokenizer.path or inputs.bpe_cache_path(d),
      "example": {
          "key": example.get("path", "0"),
          "tokens_head": [tokenizer.token(i) for i in ids[:16]],
          "decoded_head": tokenizer.decode(ids),  # its first 64 tokens
      },
  }


def main(argv):
  del argv
  with cli.user_errors():
    with cli.stdout_to_stderr():
      result = inspect(cli.config())
    print(json.dumps(result))


if __name__ == "__main__":
  cli.define_config_flag()
  app.run(main, flags_parser=cli.parse_flags)
