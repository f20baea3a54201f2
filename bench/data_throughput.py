"""Input-pipeline throughput on the quickstart data: tokenize + pack + batch (+ device put).

  python bench/data_throughput.py [--config=configs/quickstart.py] [--seconds=20]

Prints one JSON line. The pipeline must not bound training: compare `tokens_per_s` with the
quickstart model's training tokens/s from `bench/train_throughput.py`.
"""

import json
import time

from absl import app, flags

from dlm import cli, sharding
from dlm.data import inputs
from dlm.train import batches

flags.DEFINE_float("seconds", 20.0, "How long to pull batches for (after a warm-up batch).")
FLAGS = flags.FLAGS


def measure(next_batch, seconds: float, tokens_per_batch: int) -> float:
  next_batch()  # warm-up: opens files, starts threads
  n, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    next_batch()
    n += 1
  return n * tokens_per_batch / (time.perf_counter() - start)


def main(argv):
  del argv
  with cli.user_errors(), cli.stdout_to_stderr():
    config = cli.config()
    config.data.prefetch = 0  # measure the work itself, in this thread
    tokenizer = inputs.load_tokenizer(config.data)
    mesh = sharding.make_mesh(config.mesh.shape)
    per_batch = config.train.batch_size * config.data.seq_len
    it = batches.train_batches(config, tokenizer, mesh)
    numpy_rate = measure(it.next_local, FLAGS.seconds, per_batch)
    it = batches.train_batches(config, tokenizer, mesh)
    device_rate = measure(lambda: next(it), FLAGS.seconds, per_batch)
  print(json.dumps({
      "bench": "data_throughput",
      "dataset": config.data.dataset,
      "seq_len": config.data.seq_len,
      "batch_size": config.train.batch_size,
      "packing": config.data.packing,
      "tokens_per_s": round(numpy_rate),  # tokenize + pack + batch, numpy
      "tokens_per_s_to_device": round(device_rate),  # ... + global jax.Array on the mesh
  }))


if __name__ == "__main__":
  cli.define_config_flag()
  flags.FLAGS.set_default("config", "configs/quickstart.py")
  app.run(main, flags_parser=cli.parse_flags)
