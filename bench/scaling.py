"""The same global batch on 1, 2, 4, 8 devices, or processes: losses and time per step.

  python bench/scaling.py [--mode=devices|processes|both] [--counts=1,2,4,8] [--mesh=fsdp]
                          [--steps=6 --width=128 --depth=4 --heads=2 --seq_len=128
                           --batch_size=32 --vocab=2048]

`devices`: one process with eight host devices (`--xla_force_host_platform_device_count`),
the step on the first N of them. `processes`: N local processes of one device each, joined by
`jax.distributed` (gloo collectives), started by this script. Each configuration trains the
same model from the same initialisation on the same synthetic batches (global batch fixed),
with the shared train step, on a mesh that puts all N devices on the `--mesh` axis (`data`,
`fsdp`, or `tensor`). Prints one JSON line per configuration: the losses, their largest
difference from the first configuration, compile time and median seconds per step (after one
warm-up step). On CPU the "devices" are threads of the same cores, so time per step measures
the collectives' overhead, not a speed-up.
"""

import os

if __name__ == "__main__" and "XLA_FLAGS" not in os.environ:
  os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
  os.environ.setdefault("JAX_PLATFORMS", "cpu")

import json  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

import common  # noqa: E402  (bench/common.py)

flags.DEFINE_enum("mode", "both", ["devices", "processes", "both"], "What N counts.")
flags.DEFINE_list("counts", ["1", "2", "4", "8"], "Device or process counts.")
flags.DEFINE_enum("mesh", "fsdp", ["data", "fsdp", "tensor"], "The mesh axis the N devices form.")
flags.DEFINE_integer("steps", 6, "Train steps (the first compiles, the second warms up).")
common.define_model_flags(width=128, depth=4, heads=2, seq_len=128, batch_size=32,
                          vocab=2048,
                          batch_help="Global batch, the same for every N.")
flags.DEFINE_string("coordinator_address", "", "Internal: set on the worker processes.")
flags.DEFINE_integer("num_processes", 0, "Internal: set on the worker processes.")
flags.DEFINE_integer("process_id", -1, "Internal: set on the worker processes.")
FLAGS = flags.FLAGS

AXES = {"data": 0, "fsdp": 1, "tensor": 2}


def _config():
  from dlm import config as config_lib  # pylint: disable=g-import-not-at-top

  config = config_lib.base_config()
  config.model.update(width=FLAGS.width, depth=FLAGS.depth, heads=FLAGS.heads,
                      time_conditioning="none")
  config.data.seq_len = FLAGS.seq_len
  config.train.update(batch_size=FLAGS.batch_size, warmup_steps=1, lr=1e-3)
  return config_lib.validate(config)


def _batches():
  return common.synthetic_batch(np.random.default_rng(0),
                                (FLAGS.steps, FLAGS.batch_size, FLAGS.seq_len), FLAGS.vocab)


def run(devices) -> dict:
  """Trains `--steps` steps on a mesh of `devices`; losses, compile and step times."""
  import jax  # pylint: disable=g-import-not-at-top

  from dlm import models, sharding  # pylint: disable=g-import-not-at-top
  from dlm.train import optimizer as optim  # pylint: disable=g-import-not-at-top
  from dlm.train import state as state_lib  # pylint: disable=g-import-not-at-top
  from dlm.train import step as step_lib  # pylint: disable=g-import-not-at-top

  config = _config()
  shape = [1, 1, 1]
  shape[AXES[FLAGS.mesh]] = len(devices)
  mesh = sharding.make_mesh(shape, devices)
  tx, lr = optim.optimizer(config.train)
  graphdef, state, shardings = state_lib.create(
      lambda r: models.build(config, common.Vocab(FLAGS.vocab), r), tx, mesh, config.mesh.rules,
      0)
  bs = sharding.named_sharding(mesh, ("batch", "length"), config.mesh.rules)
  data = _batches()
  step = step_lib.make_train_step(graphdef, tx, lr, config.train, shardings, bs)
  losses, times, compile_s = [], [], 0.0
  with jax.set_mesh(mesh):
    for i in range(FLAGS.steps):
      batch = {k: jax.make_array_from_callback(v.shape[1:], bs, lambda idx, v=v: v[i][idx])
               for k, v in data.items()}
      start = time.perf_counter()
      state, metrics = step(state, batch)
      losses.append(float(metrics["loss"]))  # waits for the step
      elapsed = time.perf_counter() - start
      if i == 0:
        compile_s = elapsed  # compile + first step
      elif i >= 2:  # after one warm-up step
        times.append(elapsed)
  return {"mesh": dict(mesh.shape), "losses": losses, "compile_s": round(compile_s, 2),
          "step_s": round(float(np.median(times)), 4) if times else None}


def _worker() -> None:
  from dlm import distributed  # pylint: disable=g-import-not-at-top

  distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  import jax  # pylint: disable=g-import-not-at-top

  out = run(jax.devices())
  if jax.process_index() == 0:
    print(json.dumps(out))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _processes(n: int) -> dict:
  """Runs `n` worker processes of one device each (also n = 1: one process through
  jax.distributed); process 0's result."""
  port = _free_port()
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
         "JAX_PLATFORMS": "cpu"}
  procs = [subprocess.Popen(
      [sys.executable, __file__, *sys.argv[1:], f"--coordinator_address=localhost:{port}",
       f"--num_processes={n}", f"--process_id={i}"], env=env, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i in range(n)]
  outs = [p.communicate() for p in procs]
  for i, (p, (_, err)) in enumerate(zip(procs, outs)):
    if p.returncode:
      raise RuntimeError(f"worker {i} of {n} failed:\n{err[-3000:]}")
  return json.loads([line for line in outs[0][0].splitlines() if line.startswith("{")][-1])


def main(argv):
  del argv
  if FLAGS.coordinator_address:
    _worker()
    return
  import jax  # pylint: disable=g-import-not-at-top

  counts = [int(c) for c in FLAGS.counts]
  modes = ["devices", "processes"] if FLAGS.mode == "both" else [FLAGS.mode]
  first = None
  for mode in modes:
    for n in counts:
      if mode == "devices":
        if n > jax.device_count():
          raise SystemExit(f"{n} devices asked, {jax.device_count()} present")
        out = run(jax.devices()[:n])
      else:
        out = _processes(n)
      first = first or out["losses"]
      diff = float(np.max(np.abs(np.subtract(out["losses"], first))))
      print(json.dumps({"bench": "scaling", "mode": mode, "count": n,
                        "device": jax.devices()[0].device_kind, **out,
                        "global_batch": FLAGS.batch_size, "seq_len": FLAGS.seq_len,
                        "width": FLAGS.width, "depth": FLAGS.depth,
                        "max_abs_loss_diff_vs_first": diff}), flush=True)


if __name__ == "__main__":
  app.run(main)
