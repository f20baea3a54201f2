"""Training trajectories for an ADJUST head: `python -m dlm.joint_data --base=WORKDIR --out=DIR`.

Draws `--rows` sequences of `--length` tokens from the base masked model (a workdir) with its
exact one-token-per-pass lowest-entropy sampler (the `entropy` confidence order with one step
per token, temperature 1) and writes them with their reveal order as pre-tokenized JSON lines:

  DIR/train.jsonl, DIR/validation.jsonl   {"text": "{\\"tokens\\": [...], \\"order\\": [...]}"}
  DIR/tokenizer.json                      the base's tokenizer (the ids' meaning)

which `data.dataset='jsonl:DIR/{split}.jsonl'` with `data.pretokenized=True` reads
(configs/joint_head.py). Prints one JSON line (rows, wall time).
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np
from absl import app, flags

from dlm import cli, samplers
from dlm.errors import DlmError
from dlm.samplers.core import SamplerConfig, blank_canvas
from dlm.train import restore

FLAGS = flags.FLAGS
flags.DEFINE_string("base", None, "the base masked model's workdir")
flags.DEFINE_string("out", None, "output directory")
flags.DEFINE_integer("rows", 4096, "training trajectories")
flags.DEFINE_integer("validation_rows", 256, "validation trajectories")
flags.DEFINE_integer("length", 0, "tokens per trajectory; 0 = the base's data.seq_len")
flags.DEFINE_integer("batch", 256, "sequences per sampler call")
flags.DEFINE_integer("seed", 0, "sampling seed")


def trajectories(model, rows: int, length: int, batch: int, seed: int):
  """(tokens, order) int32 arrays (rows, length) from the exact lowest-entropy sampler."""
  if rows <= 0 or length <= 0 or batch <= 0:
    raise DlmError(f"need positive rows, length and batch, got {rows}, {length}, {batch}")
  if model.family != "masked":
    raise DlmError(f"trajectories come from a masked base model, not {model.family!r}")
  sampling = SamplerConfig(name="entropy", steps=length, temperature=1.0)
  canvas = blank_canvas(batch, length, model.process.mask_id)
  fn = samplers.compiled(model, sampling, jax.random.PRNGKey(seed), canvas)
  tokens, order = [], []
  for i in range(-(-rows // batch)):
    out = jax.device_get(fn(jax.random.fold_in(jax.random.PRNGKey(seed), i)))
    tokens.append(np.asarray(out.tokens))
    order.append(np.asarray(out.revealed_at))
  return np.concatenate(tokens)[:rows], np.concatenate(order)[:rows]


def write(path: str, tokens, order) -> None:
  with open(path, "w", encoding="utf-8") as f:
    for t, o in zip(tokens.tolist(), order.tolist()):
      f.write(json.dumps({"text": json.dumps({"tokens": t, "order": o})}) + "\n")


def main(argv):
  del argv
  with cli.user_errors():
    if not FLAGS.base or not FLAGS.out:
      raise DlmError("--base (a workdir) and --out (a directory) are required")
    config, tokenizer, model, step = restore.load(FLAGS.base)
    length = FLAGS.length or config.data.seq_len
    os.makedirs(FLAGS.out, exist_ok=True)
    start = time.perf_counter()
    for split, n, seed in (("train", FLAGS.rows, FLAGS.seed),
                           ("validation", FLAGS.validation_rows, FLAGS.seed + 10_000)):
      tokens, order = trajectories(model, n, length, FLAGS.batch, seed)
      write(os.path.join(FLAGS.out, f"{split}.jsonl"), tokens, order)
    tokenizer.save(os.path.join(FLAGS.out, "tokenizer.json"))
    print(json.dumps({"base": FLAGS.base, "base_step": step, "out": FLAGS.out,
                      "rows": FLAGS.rows, "validation_rows": FLAGS.validation_rows,
                      "length": length, "wall_s": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
