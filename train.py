"""Train a model: python train.py --config=configs/<name>.py --workdir=DIR [--config.KEY=VALUE]

Resumes from DIR's latest checkpoint if there is one. Prints a JSON line with the final
evaluation (validation bits per token, raw and EMA, and the unigram entropy of the same tokens).
"""

import json

from absl import app, flags

from dlm import cli
from dlm.train import loop

flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and TensorBoard logs.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  with cli.user_errors():
    if not FLAGS.workdir:
      raise cli.DlmError("--workdir is required")
    with cli.stdout_to_stderr():
      result = loop.train(cli.config(), FLAGS.workdir)
  print(json.dumps(result))


if __name__ == "__main__":
  cli.define_config_flag()
  app.run(main, flags_parser=cli.parse_flags)
