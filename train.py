"""Train a model: python train.py --config=configs/<name>.py --workdir=DIR [--config.KEY=VALUE]

Resumes from DIR's newest intact checkpoint if there is one (`--step=N`: from step N, setting
newer checkpoints aside). Prints a JSON line with the final evaluation (validation bits per
token, raw and EMA, and the unigram entropy of the same tokens). SIGTERM or Ctrl-C writes a
checkpoint and stops; one training run per workdir at a time.

Several processes (hosts, or local processes on CPU): start the same command on each with
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I`, or nothing on SLURM / Cloud
TPU, where JAX finds them (`dlm.distributed`). DIR must be shared by all processes; process 0
alone writes metrics and prints.
"""

import os
import sys

if __name__ == "__main__" and sys.platform == "linux" and "GLIBC_TUNABLES" not in os.environ:
  # XLA:CPU maps each step's temporaries anew; glibc's hugetlb tunable makes them huge pages
  # (README "Benchmarks"). glibc reads it only at start: run again with it set, once. The
  # same lines open sample.py: here, before any import of dlm, the first start costs nothing.
  os.environ["GLIBC_TUNABLES"] = "glibc.malloc.hugetlb=1"
  os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])

import json

from absl import app, flags

from dlm import cli

flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and TensorBoard logs.")
flags.DEFINE_integer("step", None, "Resume from this checkpoint step (default: the newest "
                     "intact one); newer checkpoints are moved aside.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from dlm import distributed  # pylint: disable=g-import-not-at-top  (bad flags fail fast)
  from dlm.train import loop  # pylint: disable=g-import-not-at-top

  try:
    with cli.user_errors(), cli.native_stdout_to_stderr(), cli.stdout_to_stderr():
      cli.initialize_distributed()  # before anything touches a device
      if not FLAGS.workdir:
        raise cli.DlmError("--workdir is required")
      result = loop.train(cli.config(), FLAGS.workdir, step=FLAGS.step)
  except KeyboardInterrupt:
    print("error: interrupted; the last checkpoint written is kept", file=sys.stderr)
    sys.exit(130)
  if distributed.is_main():
    print(json.dumps(result))


if __name__ == "__main__":
  cli.define_config_flag()
  cli.define_distributed_flags()
  flags.adopt_module_key_flags(cli)
  app.run(main, flags_parser=cli.parse_flags)
