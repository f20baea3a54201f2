"""Training throughput of the masked-diffusion model against the hardware's matmul peak.

  python bench/train_throughput.py [--steps=8] [--width=256 --depth=6 --heads=4 --seq_len=256
                                    --batch_size=32 --vocab=8192 --dtype=float32]
  python bench/train_throughput.py --sweep=6x256@256,6x256@512,12x384@256,4x128@1024
  python bench/train_throughput.py --compare_reference --vocab=257 --mlp_ratio=2.75

`--compare_reference` times dlm's step against a plain-JAX step of the same model
(bench/reference_step.py: md4's architecture and loss, no dlm code) in the same process,
alternating `--rounds` rounds of `--steps` steps, and prints one JSON line with both tokens/s
per round and the ratio of their step times (dlm / reference: below 1 is faster than the
reference).

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
mappings transparent huge pages (140x fewer faults here). The bench starts with what train.py
starts with: that setting unless GLIBC_TUNABLES is set, and micro-batches chosen as
`train.grad_accum=0` chooses them unless `--grad_accum` is given; the JSON records both.
"""

import json
import os
import resource
import time

import common  # bench/common.py

if __name__ == "__main__":
  common.start_as_train_py()

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from dlm import config as config_lib
from dlm import models, sharding
from dlm.train import micro_batches
from dlm.train import optimizer as optim
from dlm.train import state as state_lib
from dlm.train import step as step_lib

import reference_step  # bench/reference_step.py

flags.DEFINE_integer("steps", 8, "Timed steps (after one compile step and one warm-up step).")
common.define_model_flags(width=256, depth=6, heads=4, seq_len=256, batch_size=32, vocab=8192)
flags.DEFINE_float("mlp_ratio", 4.0, "SwiGLU hidden width / width.")
flags.DEFINE_list("sweep", [], "Models DEPTHxWIDTH@LENGTH (heads = max(1, width // 64), the "
                  "flags' batch and vocabulary); empty = the flags' one model.")
flags.DEFINE_string("dtype", "float32", "matmul compute dtype")
flags.DEFINE_string("remat", "none", "")
flags.DEFINE_integer("grad_accum", 0, "Micro-batches per step (the same update); 0 = the "
                     "automatic choice train.py makes (dlm/train/micro_batches.py).")
flags.DEFINE_bool("scan_layers", False, "Time the step with scanned layers.")
flags.DEFINE_bool("compile_both", True, "Also compile the other layer form (scanned or not) "
                  "and report both compile times.")
flags.DEFINE_string("attention_impl", "auto", "model.attention_impl (auto: cuDNN on a GPU "
                    "in 16 bits where it runs).")
flags.DEFINE_string("time_conditioning", "adaln_zero", "")
flags.DEFINE_integer("matmul_size", 2048, "Square matmul size for the measured peak.")
flags.DEFINE_bool("compare_reference", False, "Time the plain-JAX reference step "
                  "(bench/reference_step.py) alternately with dlm's.")
flags.DEFINE_integer("rounds", 3, "--compare_reference: alternating rounds.")
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


# The time conditioning's weights: the masked family runs them once per row (one time per
# row, `layers.TimeLevels`), not once per token.
PER_ROW = ("time_in", "time_hidden", "modulation", "final_modulation")


def flops_per_token(params: dict, cfg) -> float:
  """The work the step executes per token: 6 x (matmul parameters applied to every token) +
  attention scores and values, forward and backward, + the conditioning's 6 x (its matmul
  parameters) once per row, spread over the row's tokens."""
  per_token = per_row = 0
  for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = str(path[-1].key)
    if name != "embed" and x.ndim >= 2:
      if name in PER_ROW:
        per_row += int(np.prod(x.shape))
      else:
        per_token += int(np.prod(x.shape))
  attention = 12 * cfg.model.depth * cfg.model.width * cfg.data.seq_len
  return 6.0 * per_token + attention + 6.0 * per_row / cfg.data.seq_len


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
  return state, batch, lambda k: step_lib.make_train_step(graphdef, tx, lr, config.train,
                                                          shardings, batch_sharding, accum=k)


def _compile(make_step, state, batch):
  """(micro-batches, the compiled step, seconds to get it): `--grad_accum`, or chosen as
  train.py chooses (which may compile twice: both count)."""
  start = time.perf_counter()
  if FLAGS.grad_accum:
    accum, compiled = FLAGS.grad_accum, make_step(FLAGS.grad_accum).lower(state, batch).compile()
  else:
    accum, compiled, _ = micro_batches.choose_for(
        lambda k: make_step(k).lower(state, batch).compile(), batch["tokens"].sharding,
        batch["tokens"].shape)
  return accum, compiled, time.perf_counter() - start


def _memory_estimate(compiled) -> int | None:
  """XLA's figure for the compiled step: arguments + outputs + temporaries - aliased."""
  sizes = micro_batches.estimate(compiled)
  return None if sizes is None else sum(sizes)


def measure(model: dict, mesh) -> dict:
  """Compiles (both layer forms if asked) and times one model; the JSON line minus the peak."""
  compile_s = {}
  if FLAGS.compile_both:
    other = not FLAGS.scan_layers
    state, batch, make_step = _setup(_config(model, other), mesh)
    with jax.set_mesh(mesh):
      _, _, compile_s["scanned" if other else "unrolled"] = _compile(make_step, state, batch)
    del state, batch, make_step
  config = _config(model, FLAGS.scan_layers)
  state, batch, make_step = _setup(config, mesh)
  with jax.set_mesh(mesh):
    accum, compiled, seconds = _compile(make_step, state, batch)
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
      "grad_accum": accum, "grad_accum_automatic": not FLAGS.grad_accum,
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


def _timed(run, steps: int) -> float:
  """Seconds per step of `steps` calls of `run()` (which returns something to block on)."""
  start = time.perf_counter()
  for _ in range(steps):
    out = run()
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / steps


def compare_reference(model: dict, mesh) -> dict:
  """dlm's step and the plain-JAX reference step on the same model and batch, timed in
  alternating rounds after one compile and one warm-up step each."""
  config = _config(model, FLAGS.scan_layers)
  state, batch, make_step = _setup(config, mesh)
  with jax.set_mesh(mesh):
    accum, step, _ = _compile(make_step, state, batch)
  tokens = jnp.asarray(batch["tokens"])
  ref_tx = reference_step.optimizer()
  params = reference_step.init(jax.random.PRNGKey(0), vocab=FLAGS.vocab, width=model["width"],
                               depth=model["depth"], heads=model["heads"],
                               hidden=int(FLAGS.mlp_ratio * model["width"]),
                               cond=config.model.cond_width)
  ref = {"params": params, "opt": ref_tx.init(params),
         "ema": jax.tree.map(jnp.copy, params)}
  ref_step = reference_step.make_step(ref_tx, heads=model["heads"], mask_id=FLAGS.vocab - 1)
  rng = jax.random.PRNGKey(1)
  dlm_state = {"state": state}

  def run_dlm():
    dlm_state["state"], m = step(dlm_state["state"], batch)
    return m

  def run_ref():
    ref["params"], ref["opt"], ref["ema"], value = ref_step(ref["params"], ref["opt"],
                                                            ref["ema"], tokens, rng)
    return value

  with jax.set_mesh(mesh):
    for run in (run_dlm, run_ref):  # compile and warm up
      _timed(run, 2)
    rounds = [(_timed(run_dlm, FLAGS.steps), _timed(run_ref, FLAGS.steps))
              for _ in range(FLAGS.rounds)]
  n = FLAGS.batch_size * config.data.seq_len
  dlm_s = sorted(r[0] for r in rounds)[len(rounds) // 2]
  ref_s = sorted(r[1] for r in rounds)[len(rounds) // 2]
  return {
      "bench": "train_throughput_vs_reference", "device": jax.devices()[0].device_kind,
      **model, "batch_size": FLAGS.batch_size, "vocab": FLAGS.vocab,
      "mlp_ratio": FLAGS.mlp_ratio, "grad_accum": accum,
      "grad_accum_automatic": not FLAGS.grad_accum,
      "dlm_tokens_per_s": [round(n / r[0], 1) for r in rounds],
      "reference_tokens_per_s": [round(n / r[1], 1) for r in rounds],
      "dlm_params": state_lib.count_params(state.params),
      "reference_params": sum(int(x.size) for x in jax.tree.leaves(params)),
      "median_step_ratio": round(dlm_s / ref_s, 3),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
  }


def main(argv):
  del argv
  models_ = [_entry(e) for e in FLAGS.sweep] or [
      dict(depth=FLAGS.depth, width=FLAGS.width, heads=FLAGS.heads, seq_len=FLAGS.seq_len)]
  mesh = sharding.make_mesh(config_lib.base_config().mesh.shape)
  if FLAGS.compare_reference:
    for m in models_:
      print(json.dumps(compare_reference(m, mesh)))
    return
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
