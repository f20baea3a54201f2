"""Sampling speed of every sampler: tokens/s and denoiser calls (NFE).

  python bench/sample_speed.py [--workdir=DIR] [--num_samples=64 --length=256 --steps=256]

Without --workdir it first trains a small masked model briefly (quickstart data, cosine
schedule as MD4 uses for text). Prints one JSON line per sampler, then a summary line with the
caching sampler's NFE saving against plain ancestral sampling on the same time grid (the two
return identical samples for one key: tests/test_samplers.py).
"""

import json
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from dlm import config as config_lib
from dlm import samplers
from dlm.processes.time import grid_time
from dlm.samplers import text as sample_text
from dlm.train import loop
from dlm.train import restore

flags.DEFINE_string("workdir", None, "Checkpoint to sample from (default: train one briefly).")
flags.DEFINE_integer("num_samples", 64, "")
flags.DEFINE_integer("length", 256, "")
flags.DEFINE_integer("steps", 256, "")
flags.DEFINE_integer("train_steps", 200, "Training steps of the brief model.")
flags.DEFINE_string("samplers", ",".join(samplers.names("masked")),
                    "Comma-separated sampler names (masked family).")
FLAGS = flags.FLAGS


def brief_model(workdir: str) -> None:
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  config = config_lib.from_file(os.path.join(root, "configs/quickstart.py:bpe"), **{
      "data.seq_len": FLAGS.length, "diffusion.schedule": "cosine",
      "train.steps": FLAGS.train_steps, "train.eval_every": FLAGS.train_steps,
      "train.checkpoint_every": FLAGS.train_steps, "train.eval_batches": 1,
      "train.batch_size": 16, "train.progress": False})
  loop.train(config, workdir)


def expected_cache_ratio(schedule, steps: int, length: int, grid: str) -> float:
  """steps / E[steps that reveal at least one of `length` tokens]: the NFE saving the cache
  can give at all on this schedule and time grid (each token's reveal step is independent)."""
  times = grid_time(jnp.arange(steps + 1), steps, grid)
  alpha = np.asarray(schedule.alpha(times), np.float64)
  p = np.diff(alpha) / (alpha[-1] - alpha[0])
  return steps / float(np.sum(1.0 - (1.0 - p) ** length))


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)
  workdir = FLAGS.workdir
  if not workdir:
    workdir = tempfile.mkdtemp(prefix="dlm_sample_speed_")
    brief_model(workdir)
  mesh = sample_text.data_mesh(FLAGS.num_samples)
  config, tokenizer, model, step = restore.load(workdir, mesh=mesh)
  canvas = samplers.blank_canvas(FLAGS.num_samples, FLAGS.length, tokenizer.mask_id)
  runs = []
  names = FLAGS.samplers.split(",")
  for name in names:
    grids = ("uniform", "cosine") if name.startswith("ancestral") else ("uniform",)
    for grid in grids:
      cfg = samplers.SamplerConfig(name=name, steps=FLAGS.steps, grid=grid)
      with jax.set_mesh(mesh):
        fn = samplers.compiled(model, cfg, jax.random.PRNGKey(0), canvas)
        start = time.perf_counter()
        out = fn(jax.random.PRNGKey(0))
        jax.block_until_ready(out)
        wall = time.perf_counter() - start
      row = {"bench": "sample_speed", "sampler": name, "grid": grid, "steps": FLAGS.steps,
             "num_samples": FLAGS.num_samples, "length": FLAGS.length,
             "schedule": config.diffusion.schedule, "workdir": workdir, "ckpt_step": step,
             "wall_s": round(wall, 3),
             "tokens_per_s": round(FLAGS.num_samples * FLAGS.length / wall, 1),
             "mean_nfe": float(np.mean(jax.device_get(out.nfe))),
             "device": jax.devices()[0].device_kind}
      runs.append(row)
      print(json.dumps(row), flush=True)
  summary = {"bench": "sample_speed_summary"}
  for grid in ("uniform", "cosine"):
    plain = [r for r in runs if r["sampler"] == "ancestral" and r["grid"] == grid]
    cached = [r for r in runs if r["sampler"] == "ancestral_cache" and r["grid"] == grid]
    if plain and cached:
      summary[f"nfe_ratio_{grid}"] = round(plain[0]["mean_nfe"] / cached[0]["mean_nfe"], 3)
      summary[f"speedup_{grid}"] = round(plain[0]["wall_s"] / cached[0]["wall_s"], 3)
      summary[f"expected_nfe_ratio_{grid}"] = round(expected_cache_ratio(
          model.process.schedule, FLAGS.steps, FLAGS.length, grid), 3)
  print(json.dumps(summary))


if __name__ == "__main__":
  app.run(main)
