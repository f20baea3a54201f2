"""python -m dlm.convert --from_hf=DIR [--arch=llada|dream|mdlm|gpt2] --workdir=OUT
       [--tokenizer=FILE] [--seq_len=N] [--dtype=bfloat16|float32]
   python -m dlm.convert --to_hf=DIR --arch=llada|gpt2 --workdir=WORKDIR [--params=ema|params]

Converts a Hugging Face model directory into a dlm workdir, or a workdir's model into a
Hugging Face directory (see dlm/convert/__init__.py); prints one JSON line (with the
conversion's time and peak RSS)."""

from absl import app, flags

from dlm import cli, convert
from dlm.errors import DlmError

cli.define_workdir_flags("The dlm workdir written (--from_hf) or read (--to_hf).", step=True)
flags.DEFINE_string("from_hf", None, "A Hugging Face model directory to convert.")
flags.DEFINE_string("to_hf", None, "A new directory to write the workdir's model to, in HF's "
                    "layout.")
flags.DEFINE_string("arch", None, f"One of {sorted(convert.ARCHS)} (--from_hf: default from "
                    "config.json's model_type).")
flags.DEFINE_string("tokenizer", "", "A tokenizer.json (or its directory) when the model "
                    "directory has none (MDLM: GPT-2's).")
flags.DEFINE_integer("seq_len", 0, "data.seq_len of the workdir: sample.py's default length "
                     f"(0: the model's context, at most {convert.DEFAULT_SEQ_LEN}).")
flags.DEFINE_enum("dtype", "", ["", "float32", "bfloat16"], "Parameter storage (model."
                  "param_dtype; default: config.json's torch_dtype).")
FLAGS = flags.FLAGS


def _convert(workdir: str) -> dict:
  if (FLAGS.from_hf is None) == (FLAGS.to_hf is None):
    raise DlmError("give one of --from_hf=DIR (HF -> dlm) and --to_hf=DIR (dlm -> HF)")
  if FLAGS.seq_len < 0:
    raise DlmError(f"--seq_len must be >= 0, got {FLAGS.seq_len}")
  if FLAGS.from_hf is not None:
    return convert.from_hf(FLAGS.from_hf, workdir, FLAGS.arch, tokenizer=FLAGS.tokenizer,
                           seq_len=FLAGS.seq_len, param_dtype=FLAGS.dtype)
  if not FLAGS.arch:
    raise DlmError(f"--to_hf needs --arch (one of {sorted(convert.ARCHS)})")
  return convert.to_hf(workdir, FLAGS.to_hf, FLAGS.arch, step=FLAGS.step, which=FLAGS.params)


if __name__ == "__main__":
  app.run(cli.json_command(_convert), flags_parser=cli.parse_flags)
