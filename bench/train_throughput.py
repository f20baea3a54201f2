"""Training throughput of the masked-diffusion model against this machine's matmul peak.

  python bench/train_throughput.py [--steps=8] [--width=256 --depth=6 --heads=4 --seq_len=256
                                    --batch_size=32 --vocab=8192 --dtype=float32]

Prints one JSON line: tokens/s, model FLOPs per token (6 N + attention, as in the PaLM MFU
appendix), achieved FLOP/s, and their ratio to the peak float32 matmul FLOP/s measured in the
same run (a large square `jnp.dot`), or to `--peak_flops` (an accelerator's rated peak).
"""

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx

from dlm import config as config_lib
from dlm import models, sharding
from dlm.train import optimizer as optim
from dlm.train import state as state_lib
from dlm.train import step as step_lib

flags.DEFINE_integer("steps", 8, "Timed steps (after one compile step and one warm-up step).")
flags.DEFINE_integer("width", 256, "")
flags.DEFINE_integer("depth", 6, "")
flags.DEFINE_integer("heads", 4, "")
flags.DEFINE_float("mlp_ratio", 4.0, "")
flags.DEFINE_integer("seq_len", 256, "")
flags.DEFINE_integer("batch_size", 32, "")
flags.DEFINE_integer("vocab", 8192, "")
flags.DEFINE_string("dtype", "float32", "matmul compute dtype")
flags.DEFINE_string("remat", "none", "")
flags.DEFINE_bool("scan_layers", False, "")
flags.DEFINE_string("attention_impl", "xla", "")
flags.DEFINE_string("time_conditioning", "adaln_zero", "")
flags.DEFINE_integer("matmul_size", 2048, "Square matmul size for the measured peak.")
flags.DEFINE_float("peak_flops", 0.0, "Rated peak FLOP/s (e.g. 989e12 for an H100 in bf16); "
                   "0 = use the measured matmul peak.")
FLAGS = flags.FLAGS


class _Tok:  # the model needs only these two facts of a tokenizer
  def __init__(self, vocab):
    self.vocab_size, self.mask_id = vocab, vocab - 1


def matmul_peak(n: int, dtype) -> float:
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype)
  f = jax.jit(lambda a, b: jnp.dot(a, b))
  f(a, a).block_until_ready()
  best = 0.0
  for _ in range(5):
    start = time.perf_counter()
    f(a, a).block_until_ready()
    best = max(best, 2 * n**3 / (time.perf_counter() - start))
  return best


def flops_per_token(params: dict, cfg) -> float:
  """6 x (matmul parameters) + attention scores and values, forward and backward."""
  matmul = sum(int(np.prod(x.shape)) for path, x in
               jax.tree_util.tree_flatten_with_path(params)[0]
               if "embed" != str(path[-1].key) and x.ndim >= 2)
  attention = 12 * cfg.model.depth * cfg.model.width * cfg.data.seq_len
  return 6.0 * matmul + attention


def main(argv):
  del argv
  config = config_lib.base_config()
  config.model.update(width=FLAGS.width, depth=FLAGS.depth, heads=FLAGS.heads, dtype=FLAGS.dtype,
                      mlp_ratio=FLAGS.mlp_ratio,
                      remat=FLAGS.remat, scan_layers=FLAGS.scan_layers,
                      attention_impl=FLAGS.attention_impl,
                      time_conditioning=FLAGS.time_conditioning)
  config.data.seq_len = FLAGS.seq_len
  config.train.batch_size = FLAGS.batch_size
  config_lib.validate(config)
  mesh = sharding.make_mesh(config.mesh.shape)
  tok = _Tok(FLAGS.vocab)
  tx, lr = optim.optimizer(config.train)
  graphdef, state, shardings = state_lib.create(
      lambda r: models.build(config, tok, r), tx, mesh, config.mesh.rules, 0)
  batch_sharding = sharding.named_sharding(mesh, ("batch", "length"), config.mesh.rules)
  rng = np.random.default_rng(0)
  shape = (FLAGS.batch_size, FLAGS.seq_len)
  batch = {"tokens": rng.integers(0, FLAGS.vocab - 1, shape, dtype=np.int32),
           "segment_ids": np.ones(shape, np.int32),
           "positions": np.broadcast_to(np.arange(FLAGS.seq_len, dtype=np.int32), shape).copy()}
  batch = {k: jax.device_put(v, batch_sharding) for k, v in batch.items()}
  step = step_lib.make_train_step(graphdef, tx, lr, config.train, shardings, batch_sharding)
  with jax.set_mesh(mesh):
    start = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    state, m = compiled(state, batch)
    jax.block_until_ready(m)
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
      state, m = compiled(state, batch)
    jax.block_until_ready(m)
    step_s = (time.perf_counter() - start) / FLAGS.steps
  tokens_per_s = FLAGS.batch_size * FLAGS.seq_len / step_s
  fpt = flops_per_token(state.params, config)
  achieved = tokens_per_s * fpt
  peak = FLAGS.peak_flops or matmul_peak(FLAGS.matmul_size, jnp.dtype(FLAGS.dtype))
  memory = None
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    memory = stats["peak_bytes_in_use"]
  print(json.dumps({
      "bench": "train_throughput", "device": jax.devices()[0].device_kind,
      "devices": jax.device_count(), "width": FLAGS.width, "depth": FLAGS.depth,
      "heads": FLAGS.heads, "seq_len": FLAGS.seq_len, "batch_size": FLAGS.batch_size,
      "vocab": FLAGS.vocab, "dtype": FLAGS.dtype,
      "params": state_lib.count_params(state.params),
      "compile_s": round(compile_s, 2), "step_s": round(step_s, 4),
      "tokens_per_s": round(tokens_per_s, 1), "model_flops_per_token": fpt,
      "achieved_flops": achieved, "peak_flops": peak,
      "peak_source": "rated" if FLAGS.peak_flops else f"measured jnp.dot {FLAGS.matmul_size}^2",
      "ratio_to_peak": round(achieved / peak, 4), "peak_memory_bytes": memory,
  }))


if __name__ == "__main__":
  app.run(main)
