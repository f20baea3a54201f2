"""Fast decoding of masked diffusion LMs: Fast-dLLM's key/value caches and threshold decoding.

  python bench/decode_speed.py [--parts=llada,quickstart] [--workdir=runs/quality/masked
      --judge_workdir=runs/quality/ar]

Low-confidence remasking in blocks of `--block` tokens (LLaDA's `generate`, blocks from the
prompt end), with no cache, the prefix cache and the dual cache (refreshed at each block's
first step), at a fixed number of steps (one token per step) and with threshold decoding.
One JSON line per setting:
* `llada`: a converted model of LLaDA's architecture and vocabulary (126464 rows) with random
  weights stored in float32, `--llada_layers` layers of width `--llada_width` (LLaDA-8B:
  32 x 4096; the MLP 3x the width as there), a `--prompt_length`-token prompt and
  `--gen_length` generated tokens, batch 1, temperature 0 (LLaDA's evaluation setting), fixed
  steps only. FLOPs per generated token are counted from the positions each pass computes
  (weights: 2 FLOPs per parameter per position; attention: 4 x width per layer per attended
  key), for this model and for LLaDA-8B's shapes with the same passes. Random weights give
  near-uniform confidences, so no token would pass a threshold of 0.9 (threshold decoding
  would be fixed-step decoding: it is measured on the trained model only), and the agreement
  column says how far the cache's stale keys change a random model's choices, not a trained
  one's.
* `quickstart`: a dlm-trained masked model (`--workdir`; trained with configs/quickstart.py:bpe if
  missing) continuing `--num_samples` validation prompts of `--quick_prompt` tokens for the
  rest of its 128-token training length, temperature 1; quality: generative perplexity under
  the autoregressive judge (`--judge_workdir`, trained with the same config if missing) over
  prompt and continuation, sample entropy of the continuations, and MAUVE against the
  validation continuations (MiniLM features: not comparable with papers' GPT-2 Large MAUVE).
Every line has tokens/s (one run of the program compiled ahead of time), NFE, and
`agreement`: the fraction of generated tokens equal to the uncached, fixed-step run's for the
same key.
"""

import json
import os
import shutil
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convert as convert_bench  # noqa: E402  bench/convert.py: LLaDA-shaped HF files

flags.DEFINE_string("parts", "llada,quickstart", "Which models to measure.")
flags.DEFINE_integer("llada_layers", 2, "Layers of the LLaDA-shaped model.")
flags.DEFINE_integer("llada_width", 1024, "Width of the LLaDA-shaped model (heads of 128).")
flags.DEFINE_string("llada_dtype", "float32", "Storage and compute dtype of the LLaDA-shaped "
                    "model (float32 on CPU; bfloat16 on an accelerator).")
flags.DEFINE_integer("prompt_length", 64, "Prompt tokens (llada).")
flags.DEFINE_integer("gen_length", 256, "Generated tokens (llada).")
flags.DEFINE_integer("block", 32, "Block length.")
flags.DEFINE_string("thresholds", "0.9,0.1",
                    "Thresholds of threshold decoding (quickstart; Fast-dLLM's: 0.9).")
flags.DEFINE_string("scratch", "/tmp/dlm-bench-decode", "Scratch directory (llada; removed).")
flags.DEFINE_string("workdir", "runs/quality/masked", "Trained masked model (quickstart).")
flags.DEFINE_string("judge_workdir", "runs/quality/ar", "Autoregressive judge (quickstart).")
flags.DEFINE_integer("num_samples", 64, "Samples (quickstart).")
flags.DEFINE_integer("quick_prompt", 32, "Prompt tokens (quickstart).")
FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LLADA_8B = dict(depth=32, width=4096, mlp=12288, vocab=126464)
CACHES = ("none", "prefix", "dual")


def flops_per_position(shape: dict, attended: int) -> float:
  """Forward FLOPs for one position that attends to `attended` keys."""
  d, layers = shape["width"], shape["depth"]
  weights = layers * (4 * d * d + 3 * d * shape["mlp"]) + d * shape["vocab"]
  return 2.0 * weights + 4.0 * layers * d * attended


def passes(revealed_at, block_of, blocks: int, cache: str, block: int, length: int):
  """(positions, attended) per pass of the batch: every distinct step that revealed a token is
  one pass; with a cache, a block's first pass is full and the others are its window."""
  out = []
  for b in range(blocks):
    steps = np.unique(revealed_at[(block_of == b) & (revealed_at >= 0)])
    for k in range(len(steps)):
      if cache == "none" or k == 0:
        out.append((length, length))
      else:
        out.append((block if cache == "dual" else (blocks - b) * block, length))
  return out


def decode(model, canvas, sampling, seed: int = 0):
  """Samples and the wall time of a run of the program compiled ahead of time."""
  from dlm import samplers  # pylint: disable=g-import-not-at-top

  fn = samplers.compiled(model, sampling, jax.random.PRNGKey(seed), canvas)
  start = time.perf_counter()
  out = jax.block_until_ready(fn(jax.random.PRNGKey(seed)))
  return out, time.perf_counter() - start


def settings(base, thresholds: bool = True):
  """(cache, sampling) for every cache at fixed steps, then with each threshold."""
  import dataclasses  # pylint: disable=g-import-not-at-top

  values = [0.0] + ([float(t) for t in FLAGS.thresholds.split(",") if t] if thresholds else [])
  for threshold in values:
    for cache in CACHES:
      yield cache, dataclasses.replace(base, cache=cache, threshold=threshold)


def llada_part() -> None:
  import dlm  # pylint: disable=g-import-not-at-top
  from dlm import samplers
  from dlm.samplers import core

  width = FLAGS.llada_width
  shape = dict(d_model=width, n_heads=width // 128, n_kv_heads=width // 128,
               mlp_hidden_size=3 * width)
  root = FLAGS.scratch
  shutil.rmtree(root, ignore_errors=True)
  try:
    convert_bench.SHAPE.update(shape)
    convert_bench.write_llada(f"{root}/hf", FLAGS.llada_layers)
    convert_bench.convert(f"{root}/hf", f"{root}/workdir", dtype=FLAGS.llada_dtype)
    run = dlm.load(f"{root}/workdir")
  finally:
    shutil.rmtree(root, ignore_errors=True)
  mask = run.model.process.mask_id
  vocab = run.tokenizer.vocab_size
  prompt = np.random.default_rng(0).integers(0, min(vocab, 300), FLAGS.prompt_length)
  length = FLAGS.prompt_length + FLAGS.gen_length
  tokens = np.concatenate([prompt, np.full(FLAGS.gen_length, mask)]).astype(np.int32)[None]
  canvas = samplers.Canvas(jnp.asarray(tokens),
                           jnp.asarray(np.arange(length) < FLAGS.prompt_length)[None])
  base = samplers.SamplerConfig(name="low_confidence", steps=FLAGS.gen_length,
                                block_length=FLAGS.block, temperature=0.0)
  ours = dict(depth=FLAGS.llada_layers, width=width, mlp=3 * width,
              vocab=run.model.net.cfg.vocab_size)
  reference, rows = None, []
  for cache, sampling in settings(base, thresholds=False):
    out, wall = decode(run.model, canvas, sampling)
    layout = samplers.with_generation_length(sampling, canvas)
    block_of = np.asarray(core.block_layout(canvas.given, layout)[0])
    revealed = np.asarray(out.revealed_at)
    plan = passes(revealed, block_of, FLAGS.gen_length // FLAGS.block, cache, FLAGS.block, length)
    generated = np.asarray(out.tokens)[:, FLAGS.prompt_length:]
    if reference is None:
      reference = generated
    row = {"bench": "decode_speed", "model": "llada-shaped", "layers": FLAGS.llada_layers,
           "width": width, "prompt": FLAGS.prompt_length, "gen": FLAGS.gen_length, "block": FLAGS.block,
           "cache": cache, "threshold": sampling.threshold,
           "nfe": int(np.asarray(out.nfe)[0]), "wall_s": round(wall, 3),
           "tokens_per_s": round(FLAGS.gen_length / wall, 2),
           "agreement": round(float((generated == reference).mean()), 4)}
    for name, s in (("gflops_per_token", ours), ("llada_8b_gflops_per_token", LLADA_8B)):
      total = sum(n * flops_per_position(s, att) for n, att in plan)
      row[name] = round(total / FLAGS.gen_length / 1e9, 2)
    rows.append(row)
    print(json.dumps(row), flush=True)
  none = rows[0]
  for row in rows[1:3]:
    print(json.dumps({"bench": "decode_speed", "model": "llada-shaped", "cache": row["cache"],
                      "fewer_flops_than_none": round(
                          none["gflops_per_token"] / row["gflops_per_token"], 2),
                      "fewer_flops_than_none_llada_8b": round(
                          none["llada_8b_gflops_per_token"]
                          / row["llada_8b_gflops_per_token"], 2),
                      "speedup": round(row["tokens_per_s"] / none["tokens_per_s"], 2)}),
          flush=True)


def quickstart_part() -> None:
  import dlm  # pylint: disable=g-import-not-at-top
  from dlm import config as config_lib
  from dlm import evaluate, features, samplers
  from dlm.samplers import text as sample_text
  from dlm.train import loop

  for workdir, overrides in ((FLAGS.workdir, {}),
                             (FLAGS.judge_workdir, {"model.family": "autoregressive"})):
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
      loop.train(config_lib.from_file(os.path.join(ROOT, "configs/quickstart.py:bpe"),
                                      **{"train.progress": False, **overrides}), workdir)
  run = dlm.load(FLAGS.workdir)
  judge = dlm.load(FLAGS.judge_workdir, params="params")
  config, tokenizer = run.config, run.tokenizer
  rows = evaluate.validation_rows(config, tokenizer, sample_text.data_mesh(1), FLAGS.num_samples)
  length, n = config.data.seq_len, FLAGS.quick_prompt
  mask = run.model.process.mask_id
  tokens = np.stack([np.concatenate([r[:n], np.full(length - n, mask)]) for r in rows])
  given = np.broadcast_to(np.arange(length) < n, tokens.shape)
  canvas = samplers.Canvas(jnp.asarray(tokens, jnp.int32), jnp.asarray(given))
  refs = [tokenizer.decode(r[n:], skip_special_tokens=True) for r in rows]
  gen = length - n
  block = FLAGS.block if gen % FLAGS.block == 0 else gen
  base = samplers.SamplerConfig(name="low_confidence", steps=gen, block_length=block,
                                temperature=1.0)
  reference = None
  for cache, sampling in settings(base):
    out, wall = decode(run.model, canvas, sampling)
    generated = np.asarray(out.tokens)[:, n:]
    if reference is None:
      reference = generated
    texts = [tokenizer.decode(g, skip_special_tokens=True) for g in generated]
    full = [list(map(int, r)) for r in np.asarray(out.tokens)]
    row = {"bench": "decode_speed", "model": "quickstart", "prompt": n, "gen": gen,
           "block": block, "num_samples": len(rows), "cache": cache,
           "threshold": sampling.threshold,
           "mean_nfe": round(float(np.asarray(out.nfe).mean()), 2),
           "wall_s": round(wall, 3),
           "tokens_per_s": round(generated.size / wall, 1),
           "agreement": round(float((generated == reference).mean()), 4),
           "entropy_bits": round(evaluate.sample_entropy([g for g in generated]), 3),
           **{k: (round(v, 2) if isinstance(v, float) else v)
              for k, v in evaluate.generative_perplexity(judge.model, full).items()},
           "mauve": round(features.mauve_score(texts, refs), 3)}
    print(json.dumps(row), flush=True)


def main(argv):
  del argv
  parts = FLAGS.parts.split(",")
  if "llada" in parts:
    llada_part()
  if "quickstart" in parts:
    quickstart_part()


if __name__ == "__main__":
  app.run(main)
