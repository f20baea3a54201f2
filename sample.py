"""Sample from a checkpoint: python sample.py --workdir=DIR [--num_samples=K] [--steps=S]
    [--sampler=NAME] [--prompt=TEXT | --infill="text [MASK*5] text" | --source=TEXT]
    [sampler options] [--chat [--system=TEXT]] [--new_tokens=N] [--mesh=DATA,FSDP,TENSOR]

The checkpoint holds the model's config and tokenizer; nothing else is needed. Any family:
masked, continuous, neodiff, autoregressive, ccdd, cosmos, any_order, joint_head (the sampler
defaults to the family's first).
--chat renders --prompt with an instruct model's chat template (python -m dlm.convert) and
prints the answer, which also ends at the model's end-of-turn token; --mesh shards the
parameters (FSDP/tensor axes, the training rules) for models no one device holds, and the
memory per device is printed before sampling. --source conditions a model trained on (source,
target) pairs; --schedule loads an optimised extrinsic time schedule (NeoDiff,
`python -m dlm.neodiff_schedule`). Samples end at the first generated eos. --output=FILE.jsonl keeps them with their settings; --show_steps
prints how each was denoised; --html=FILE writes a page that replays it.
"""

import os
import sys

if __name__ == "__main__" and sys.platform == "linux" and "GLIBC_TUNABLES" not in os.environ:
  # XLA:CPU maps each step's temporaries anew; glibc's hugetlb tunable makes them huge pages
  # (README "Benchmarks"). glibc reads it only at start: run again with it set, once. The
  # same lines open train.py: here, before any import of dlm, the first start costs nothing.
  os.environ["GLIBC_TUNABLES"] = "glibc.malloc.hugetlb=1"
  os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])

import dataclasses
import json

from absl import app, flags

import dlm
from dlm import cli
from dlm import registry
from dlm import samplers
from dlm.errors import DlmError
from dlm.samplers import render, text
from dlm.train import restore

cli.define_workdir_flags()
cli.define_sampling_flags("One of: " + "; ".join(
    f"{family}: {', '.join(samplers.names(family))}" for family in registry.names()
    if samplers.names(family)) + " (default: the family's first).")
flags.DEFINE_integer("num_samples", 4, "How many samples.")
flags.DEFINE_integer("batch_size", 0, "Samples per device call (0: as many as fit in memory).")
flags.DEFINE_integer("length", 0, "Tokens per sample (0: the model's training length).")
flags.DEFINE_integer("new_tokens", 0, "Positions to generate after the prompt (LLaDA's "
                     "gen_length), instead of --length; 0: fill --length.")
flags.DEFINE_string("prompt", None, "Text the samples continue.")
flags.DEFINE_string("infill", None, "Text with [MASK] / [MASK*n] spans to fill.")
flags.DEFINE_string("source", None, "Source text of a conditional (pair) model, e.g. code to "
                    "summarise.")
cli.define_output_flag("Write the samples to this JSONL file.")
flags.DEFINE_bool("chat", False, "Render --prompt as a user message with the model's chat "
                  "template (instruct models converted by dlm.convert); print the answer.")
flags.DEFINE_string("system", None, "With --chat: a system message before the prompt.")
flags.DEFINE_string("mesh", "", "Devices as data,fsdp,tensor (e.g. 1,8,1: parameters sharded "
                    "over 8 devices, for models no device holds alone); '' = data parallel "
                    "over the devices that split the batch.")
flags.DEFINE_bool("show_steps", False, "Print the denoising of each sample, step by step.")
flags.DEFINE_string("html", None, "Write an HTML page replaying the denoising.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  with cli.user_errors():
    workdir = cli.workdir()
    if FLAGS.num_samples <= 0:
      raise DlmError(f"--num_samples must be positive, got {FLAGS.num_samples}")
    for name in ("length", "batch_size", "new_tokens"):
      if FLAGS[name].value < 0:
        raise DlmError(f"--{name} must be >= 0, got {FLAGS[name].value}")
    cli.check_output(FLAGS.output)
    cli.check_output(FLAGS.html, "html")
    options = cli.sampling_options()
    times = cli.schedule_times()
    batch = min(FLAGS.batch_size or FLAGS.num_samples, FLAGS.num_samples)
    mesh = cli.mesh_flag(FLAGS.mesh) if FLAGS.mesh else text.data_mesh(batch)
    if FLAGS.system is not None and not FLAGS.chat:
      raise DlmError("--system needs --chat")
    if FLAGS.chat and not FLAGS.prompt:
      raise DlmError("--chat needs --prompt (the user's message)")
    if FLAGS.chat:  # from the stored config, before any parameter is read
      dlm.api.chat_template(restore.read_config(workdir, FLAGS.step))
    with cli.stdout_to_stderr():
      run = dlm.load(workdir, step=FLAGS.step, params=FLAGS.params, mesh=mesh)
      data = run.config.data
      if FLAGS.length > data.seq_len:
        print(f"warning: --length={FLAGS.length} is beyond the model's training length "
              f"{data.seq_len}; expect worse samples past it", file=sys.stderr)
      if FLAGS.source is not None and not data.source_feature:
        raise DlmError(f"--source needs a model trained on pairs; {workdir!r} was trained on "
                       f"unconditional text ({data.dataset})")
      sampling = dlm.api.sampler_config(run.family, FLAGS.sampler, **options)
      results = dlm.sample(run, FLAGS.prompt, num_samples=FLAGS.num_samples, sampler=sampling.name,
                           length=FLAGS.length, seed=FLAGS.seed, batch_size=FLAGS.batch_size,
                           infill=FLAGS.infill, source=FLAGS.source, times=times,
                           progress=True, chat=FLAGS.chat, system=FLAGS.system,
                           new_tokens=FLAGS.new_tokens, **options)
  settings = {"workdir": workdir, "step": run.step, "params": FLAGS.params,
              **dataclasses.asdict(sampling), "seed": FLAGS.seed, "prompt": FLAGS.prompt,
              "infill": FLAGS.infill, "source": FLAGS.source, "schedule": FLAGS.schedule,
              "chat": FLAGS.chat, "system": FLAGS.system, "mesh": FLAGS.mesh,
              "new_tokens": FLAGS.new_tokens}
  for i, r in enumerate(results):
    print(f"--- sample {i} (nfe {r['nfe']}) ---")
    # pairs: the target; chat: the answer
    print(r["generated"] if FLAGS.source is not None or FLAGS.chat else r["text"])
    if FLAGS.show_steps:
      pieces = render.token_strings(run.tokenizer, r["full_tokens"])
      for line in render.terminal_frames(pieces, r["revealed_at"], sampling.steps,
                                         color=sys.stdout.isatty()):
        print(line)
  if FLAGS.output:
    with open(FLAGS.output, "w") as f:
      for r in results:
        f.write(json.dumps({**r, "settings": settings}) + "\n")
  if FLAGS.html:
    pages = [{"pieces": render.token_strings(run.tokenizer, r["full_tokens"]),
              "revealed_at": r["revealed_at"], "steps": sampling.steps, "label": f"sample {i}"}
             for i, r in enumerate(results)]
    with open(FLAGS.html, "w") as f:
      f.write(render.html_replay(pages, f"{workdir} step {run.step}: {sampling.name}, "
                                        f"{sampling.steps} steps"))


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
