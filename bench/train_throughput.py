"""Training throughput of the masked-diffusion model against the hardware's matmul peak.

  python bench/train_throughput.py [--steps=8] [--width=256 --depth=6 --heads=4 --seq_len=256
                                    --batch_size=32 --vocab=8192 --dtype=float32]
  python bench/train_throughput.py --sweep=6x256@256,6x256@512,12x384@256,4x128@1024

Prints one JSON line per model (the flags' model, or each `DEPTHxWIDTH@LENGTH` of `--sweep`
with max(1, width // 64) heads): tokens/s, model FLOPs per token (6 N + attention, as in the
PaLM MFU appendix), achieved FLOP/s and their ratio to the peak: the rated peak of a known
accelerator (`RATED_BF16`, bfloat16 only) or `--peak_flops`, else the float32 matmul peak
measured here (the best of five square `jnp.dot`s before and after the timed steps, the higher
kept). On CPU also the same ratio in CPU seconds of this process (`cpu_ratio_to_peak`), which
other load on a shared machine leaves alone but which does not count idle threads. Also the
compile time of the step with unrolled and with scanned layers (`--compile_both`), XLA's memory
estimate of the compiled step, the device's peak memory where it reports one (GPU, TPU), and
the process's peak RSS, and the minor page faults per step.

On CPU, XLA allocates the step's temporaries (3.5 GB for the reference model) afresh at every
execution, and glibc serves an allocation that large with a new mmap: a million page faults per
step, each page zeroed by the kernel. `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` makes those
mappings transparent huge pages (140x fewer faults here); the JSON records the setting it ran with.
"""

import json
import os
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from dlm import config as config_lib
from dlm import models, sharding
from dlm.train import optimizer as optim
from dlm.train import state as state_lib
from dlm.train import step as step_lib

import common  # bench/common.py

flags.DEFINE_integer("steps", 8, "Timed steps (after one compile step and one warm-up step).")
common.define_model_flags(width=256, depth=6, heads=4, seq_len=256, batch_size=32, vocab=8192)
flags.DEFINE_float("mlp_ratio", 4.0, "SwiGLU hidden width / width.")
flags.DEFINE_list("sweep", [], "Models DEPTHxWIDTH@LENGTH (heads = max(1, width // 64), the "
                  "flags' batch and vocabulary); empty = the flags' one model.")
flags.DEFINE_string("dtype", "float32", "matmul compute dtype")
flags.DEFINE_string("remat", "none", "")
flags.DEFINE_integer("grad_accum", 1, "Micro-batches per step (the same update).")
flags.DEFINE_bool("scan_layers", False, "Time the step with scanned layers.")
flags.DEFINE_bool("compile_both", True, "Also compile the other layer form (scanned or not) "
                  "and report both compile times.")
flags.DEFINE_string("attention_impl", "xla", "")
flags.DEFINE_string("time_conditioning", "adaln_zero", "")
flags.DEFINE_integer("matmul_size", 2048, "Square matmul size for the measured peak.")
flags.DEFINE_float("peak_flops", 0.0, "Rated peak FLOP/s (e.g. 989e12 for an H100 in bf16); "
                   "0 = a known accelerator's rated bf16 peak, else the measured matmul peak.")
FLAGS = flags.FLAGS

# Dense bfloat16 peaks from the vendors' data sheets, by `device_kind`.
RATED_BF16 = {
    "NVIDIA H100 80GB HBM3": 989e12, "NVIDIA H100": 989e12, "NVIDIA H200": 989e12,
    "NVIDIA A100-SXM4-80GB": 312e12, "NVIDIA A100-SXM4-40GB": 312e12,
    "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12,
    "TPU v6 lite": 918e12, "TPU v6e": 918e12,
}


def matmul_peak(n: int, dtype) -> tuple[float, float]:
  """The best of five square matmuls: FLOP per wall second, and per CPU second of this
  process (all its threads; what other load on the machine does not change)."""
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype)
  f = jax.jit(lambda a, b: jnp.dot(a, b))
  f(a, a).block_until_ready()
  best, best_cpu = 0.0, 0.0
  for _ in range(5):
    start, start_cpu = time.perf_counter(), time.process_time()
    f(a, a).block_until_ready()
    best = max(best, 2 * n**3 / (time.perf_counter() - start))
    best_cpu = max(best_cpu, 2 * n**3 / (time.process_time() - start_cpu))
  return best, best_cpu


def flops_per_token(params: dict, cfg) -> float:
  """6 x (matmul parameters) + attention scores and values, forward and backward."""
  matmul = sum(int(np.prod(x.shape)) for path, x in
               jax.tree_util.tree_flatten_with_path(params)[0]
               if "embed" != str(path[-1].key) and x.ndim >= 2)
  attention = 12 * cfg.model.depth * cfg.model.width * cfg.data.seq_len
  return 6.0 * matmul + attention


def _entry(text: str) -> dict:
  """'6x256@256' -> depth 6, width 256, length 256."""
  try:
    layers, rest = text.lower().split("x")
    width, length = rest.split("@")
    depth, width, length = int(layers), int(width), int(length)
  except ValueError as e:
    raise app.UsageError(f"--sweep entries are DEPTHxWIDTH@LENGTH, got {text!r}") from e
  return dict(depth=depth, width=width, heads=max(1, width // 64), seq_len=length)


def _config(model: dict, scan_layers: bool):
  config = config_lib.base_config()
  config.model.update(width=model["width"], depth=model["depth"], heads=model["heads"],
                      dtype=FLAGS.dtype, mlp_ratio=FLAGS.mlp_ratio, remat=FLAGS.remat,
                      scan_layers=scan_layers, attention_impl=FLAGS.attention_impl,
                      time_conditioning=FLAGS.time_conditioning)
  config.data.seq_len = model["seq_len"]
  config.train.batch_size = FLAGS.batch_size
  config.train.grad_accum = FLAGS.grad_accum
  return config_lib.validate(config)


def _setup(config, mesh):
  tx, lr = optim.optimizer(config.train)
  graphdef, state, shardings = state_lib.create(
      lambda r: models.build(config, common.Vocab(FLAGS.vocab), r), tx, mesh, config.mesh.rules,
      0)
  batch_sharding = sharding.named_sharding(mesh, ("batch", "length"), config.mesh.rules)
  batch = common.synthetic_batch(np.random.default_rng(0),
                                 (FLAGS.batch_size, config.data.seq_len), FLAGS.vocab)
  batch = {k: jax.device_put(v, batch_sharding) for k, v in batch.items()}
  step = step_lib.make_train_step(graphdef, tx, lr, config.train, shardings, batch_sharding)
  return state, batch, step


def _compile(step, state, batch):
  start = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  return compiled, time.perf_counter() - start


def _memory_estimate(compiled) -> int | None:
  """XLA's figure for the compiled step: arguments + outputs + temporaries - aliased."""
  try:
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - m.alias_size_in_bytes)
  except (AttributeError, NotImplementedError, TypeError):
    return None


def measure(model: dict, mesh) -> dict:
  """Compiles (both layer forms if asked) and times one model; the JSON line minus the peak."""
  compile_s = {}
  if FLAGS.compile_both:
    other = not FLAGS.scan_layers
    state, batch, step = _setup(_config(model, other), mesh)
    with jax.set_mesh(mesh):
      _, compile_s["scanned" if other else "unrolled"] = _compile(step, state, batch)
    del state, batch, step
  config = _config(model, FLAGS.scan_layers)
  state, batch, step = _setup(config, mesh)
  with jax.set_mesh(mesh):
    compiled, seconds = _compile(step, state, batch)
    compile_s["scanned" if FLAGS.scan_layers else "unrolled"] = seconds
    state, m = compiled(state, batch)
    jax.block_until_ready(m)
    start, start_cpu = time.perf_counter(), time.process_time()
    start_faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(FLAGS.steps):
      state, m = compiled(state, batch)
    jax.block_until_ready(m)
    step_s = (time.perf_counter() - start) / FLAGS.steps
    step_cpu_s = (time.process_time() - start_cpu) / FLAGS.steps
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start_faults) / FLAGS.steps
  tokens_per_s = FLAGS.batch_size * config.data.seq_len / step_s
  fpt = flops_per_token(state.params, config)
  stats = jax.devices()[0].memory_stats() or {}
  return {
      "bench": "train_throughput", "device": jax.devices()[0].device_kind,
      "devices": jax.device_count(), **model, "batch_size": FLAGS.batch_size,
      "vocab": FLAGS.vocab, "dtype": FLAGS.dtype, "remat": FLAGS.remat,
      "grad_accum": FLAGS.grad_accum,
      "scan_layers": FLAGS.scan_layers, "time_conditioning": FLAGS.time_conditioning,
      "params": state_lib.count_params(state.params),
      "compile_s": round(compile_s["scanned" if FLAGS.scan_layers else "unrolled"], 2),
      "compile_s_unrolled": round(compile_s.get("unrolled", float("nan")), 2),
      "compile_s_scanned": round(compile_s.get("scanned", float("nan")), 2),
      "step_s": round(step_s, 4), "step_cpu_s": round(step_cpu_s, 4),
      "page_faults_per_step": round(faults),
      "tokens_per_s": round(tokens_per_s, 1),
      "model_flops_per_token": fpt, "achieved_flops": tokens_per_s * fpt,
      "achieved_flops_per_cpu_s": FLAGS.batch_size * config.data.seq_len * fpt / step_cpu_s,
      "compiled_memory_bytes": _memory_estimate(compiled),
      "peak_memory_bytes": stats.get("peak_bytes_in_use"),
      "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
  }


def main(argv):
  del argv
  models_ = [_entry(e) for e in FLAGS.sweep] or [
      dict(depth=FLAGS.depth, width=FLAGS.width, heads=FLAGS.heads, seq_len=FLAGS.seq_len)]
  mesh = sharding.make_mesh(config_lib.base_config().mesh.shape)
  kind = jax.devices()[0].device_kind
  rated = FLAGS.peak_flops or (RATED_BF16.get(kind) if FLAGS.dtype == "bfloat16" else None)
  dtype = jnp.dtype(FLAGS.dtype)
  before = None if rated else matmul_peak(FLAGS.matmul_size, dtype)
  results = [measure(m, mesh) for m in models_]
  extra = {}
  if rated:
    peak, source = rated, "rated"
  else:
    after = matmul_peak(FLAGS.matmul_size, dtype)
    peak, peak_cpu = max(before[0], after[0]), max(before[1], after[1])
    source = f"measured jnp.dot {FLAGS.matmul_size}^2 {FLAGS.dtype}, best of before/after"
    extra = {"peak_flops_per_cpu_s": peak_cpu}
  for r in results:
    if extra:  # the same ratio in CPU seconds: robust to other processes on a shared machine
      extra["cpu_ratio_to_peak"] = round(r["achieved_flops_per_cpu_s"] / peak_cpu, 4)
    print(json.dumps({**r, "peak_flops": peak, "peak_source": source,
                      "ratio_to_peak": round(r["achieved_flops"] / peak, 4), **extra}))


if __name__ == "__main__":
  app.run(main)
