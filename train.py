"""Train a model: python train.py --config=configs/<name>.py --workdir=DIR [--config.KEY=VALUE]

Resumes from DIR's latest checkpoint if there is one. Prints a JSON line with the final
evaluation (validation bits per token, raw and EMA, and the unigram entropy of the same tokens).

Several processes (hosts, or local processes on CPU): start the same command on each with
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I`, or nothing on SLURM / Cloud
TPU, where JAX finds them (`dlm.distributed`). DIR must be shared by all processes; process 0
alone writes metrics and prints.
"""

import json

from absl import app, flags

from dlm import cli
from dlm import distributed
from dlm.train import loop

flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and TensorBoard logs.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  with cli.user_errors(), cli.native_stdout_to_stderr(), cli.stdout_to_stderr():
    cli.initialize_distributed()  # before anything touches a device
    if not FLAGS.workdir:
      raise cli.DlmError("--workdir is required")
    result = loop.train(cli.config(), FLAGS.workdir)
  if distributed.is_main():
    print(json.dumps(result))


if __name__ == "__main__":
  cli.define_config_flag()
  cli.define_distributed_flags()
  app.run(main, flags_parser=cli.parse_flags)
