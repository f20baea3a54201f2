"""Sample from a checkpoint: python sample.py --workdir=DIR [--num_samples=K] [--steps=S]
    [--sampler=NAME] [--prompt=TEXT | --infill="text [MASK*5] text" | --source=TEXT]
    [sampler options]

The checkpoint holds the model's config and tokenizer; nothing else is needed. Any family:
masked, continuous, neodiff, autoregressive, ccdd, cosmos, any_order, joint_head (the sampler
defaults to the family's first).
--source conditions a model trained on (source, target) pairs; --schedule loads an optimised
extrinsic time schedule (NeoDiff, `python -m dlm.neodiff_schedule`). Samples end at the first
generated eos. --output=FILE.jsonl keeps them with their settings; --show_steps
prints how each was denoised; --html=FILE writes a page that replays it.
"""

import dataclasses
import json
import os
import sys

from absl import app, flags

from dlm import cli
from dlm import samplers
from dlm.errors import DlmError

flags.DEFINE_string("workdir", None, "Training directory with checkpoints.")
flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
flags.DEFINE_enum("params", "ema", ["ema", "params"], "EMA or raw parameters.")
flags.DEFINE_integer("num_samples", 4, "How many samples.")
flags.DEFINE_integer("batch_size", 0, "Samples per device call (0: as many as fit in memory).")
flags.DEFINE_integer("length", 0, "Tokens per sample (0: the model's training length).")
flags.DEFINE_string("sampler", None, "One of: " + "; ".join(
    f"{family}: {', '.join(names)}" for family, names in samplers.FAMILY_SAMPLERS.items())
                    + " (default: the family's first).")
flags.DEFINE_integer("steps", 128, "Denoising steps.")
flags.DEFINE_integer("block_length", 0, "Semi-autoregressive block length (0: one block).")
flags.DEFINE_float("temperature", 1.0, "Sampling temperature (0: greedy).")
flags.DEFINE_integer("top_k", 0, "Top-k filtering (0: off).")
flags.DEFINE_float("top_p", 1.0, "Nucleus filtering (1: off).")
flags.DEFINE_bool("float64", False, "Draw tokens in float64 (LLaDA's Gumbel precision).")
flags.DEFINE_float("cfg_scale", 0.0, "Classifier-free guidance weight (prompted sampling).")
flags.DEFINE_float("z_guidance", 1.0, "CCDD guidance w on the representation channel (1 = off).")
flags.DEFINE_enum("grid", "uniform", ["uniform", "cosine"], "Ancestral time grid.")
flags.DEFINE_integer("draft_length", 5, "ASSD (any_order family): tokens drafted per step (k).")
flags.DEFINE_enum("reveal", "even", ["even", "dream"], "Confidence orders: tokens revealed per "
                  "step, LLaDA's even split per block or Dream's int(m (1 - s/t)).")
flags.DEFINE_enum("readout", "mean", ["mean", "x0"], "Cosmos: decode the last step's mean "
                  "(official) or one more x0 pass at t_min (+1 NFE).")
flags.DEFINE_string("prompt", None, "Text the samples continue.")
flags.DEFINE_string("infill", None, "Text with [MASK] / [MASK*n] spans to fill.")
flags.DEFINE_string("source", None, "Source text of a conditional (pair) model, e.g. code to "
                    "summarise.")
flags.DEFINE_string("schedule", None, "JSON extrinsic time schedule (dlm.neodiff_schedule).")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_string("output", None, "Write the samples to this JSONL file.")
flags.DEFINE_bool("show_steps", False, "Print the denoising of each sample, step by step.")
flags.DEFINE_string("html", None, "Write an HTML page replaying the denoising.")
FLAGS = flags.FLAGS


def _check_output(path: str | None, flag: str) -> None:
  """An output file's directory exists and is writable, before any sampling."""
  if path is None:
    return
  directory = os.path.dirname(os.path.abspath(path))
  if os.path.isdir(path):
    raise DlmError(f"--{flag}={path!r} is a directory; give a file name")
  if not os.path.isdir(directory):
    raise DlmError(f"--{flag}={path!r}: the directory {directory!r} does not exist")
  if not os.access(directory, os.W_OK):
    raise DlmError(f"--{flag}={path!r}: the directory {directory!r} is not writable")


def main(argv):
  del argv
  with cli.user_errors():
    if not FLAGS.workdir:
      raise DlmError("--workdir is required")
    for name in ("num_samples", "steps"):
      if FLAGS[name].value <= 0:
        raise DlmError(f"--{name} must be positive, got {FLAGS[name].value}")
    for name in ("length", "batch_size", "block_length", "top_k"):
      if FLAGS[name].value < 0:
        raise DlmError(f"--{name} must be >= 0, got {FLAGS[name].value}")
    _check_output(FLAGS.output, "output")
    _check_output(FLAGS.html, "html")
    if FLAGS.float64:
      import jax  # pylint: disable=g-import-not-at-top

      jax.config.update("jax_enable_x64", True)
    from dlm.samplers import render, text  # pylint: disable=g-import-not-at-top
    from dlm.train import loop  # pylint: disable=g-import-not-at-top

    cfg = samplers.SamplerConfig(
        name=FLAGS.sampler or "", steps=FLAGS.steps, block_length=FLAGS.block_length,
        temperature=FLAGS.temperature, top_k=FLAGS.top_k, top_p=FLAGS.top_p,
        float64=FLAGS.float64, cfg_scale=FLAGS.cfg_scale, grid=FLAGS.grid,
        z_guidance=FLAGS.z_guidance, draft_length=FLAGS.draft_length, reveal=FLAGS.reveal,
        readout=FLAGS.readout)
    if FLAGS.sampler and cfg.name not in samplers.SAMPLERS:
      raise DlmError(f"unknown sampler {cfg.name!r}; choose one of {', '.join(samplers.SAMPLERS)}")
    batch = min(FLAGS.batch_size or FLAGS.num_samples, FLAGS.num_samples)
    mesh = text.data_mesh(batch)
    with cli.stdout_to_stderr():
      config, tokenizer, model, step = loop.restore_for_sampling(
          FLAGS.workdir, FLAGS.params, FLAGS.step, mesh)
      if FLAGS.length > config.data.seq_len:
        print(f"warning: --length={FLAGS.length} is beyond the model's training length "
              f"{config.data.seq_len}; expect worse samples past it", file=sys.stderr)
      if not FLAGS.sampler:
        cfg = dataclasses.replace(cfg, name=samplers.default_sampler(config.model.family))
      times = None
      if FLAGS.schedule:
        from dlm.processes import nonsim  # pylint: disable=g-import-not-at-top

        times = nonsim.load_schedule(FLAGS.schedule)
      if FLAGS.source is not None and not config.data.get("source_feature", ""):
        raise DlmError(f"--source needs a model trained on pairs; {FLAGS.workdir!r} was trained "
                       f"on unconditional text ({config.data.dataset})")
      length = FLAGS.length or config.data.seq_len
      results = text.sample(model, tokenizer, cfg, num_samples=FLAGS.num_samples,
                            length=length, prompt=FLAGS.prompt, infill=FLAGS.infill,
                            source=FLAGS.source, source_len=config.data.get("source_len", 0),
                            add_bos=config.data.add_bos, seed=FLAGS.seed,
                            batch_size=FLAGS.batch_size, max_length=config.data.seq_len,
                            mesh=mesh, times=times, progress=True)
  settings = {"workdir": FLAGS.workdir, "step": step, "params": FLAGS.params,
              **dataclasses.asdict(cfg), "seed": FLAGS.seed, "prompt": FLAGS.prompt,
              "infill": FLAGS.infill, "source": FLAGS.source, "schedule": FLAGS.schedule}
  for i, r in enumerate(results):
    print(f"--- sample {i} (nfe {r['nfe']}) ---")
    print(r["generated"] if FLAGS.source is not None else r["text"])  # pairs: the target
    if FLAGS.show_steps:
      pieces = render.token_strings(tokenizer, r["full_tokens"])
      for line in render.terminal_frames(pieces, r["revealed_at"], cfg.steps,
                                         color=sys.stdout.isatty()):
        print(line)
  if FLAGS.output:
    with open(FLAGS.output, "w") as f:
      for r in results:
        f.write(json.dumps({**r, "settings": settings}) + "\n")
  if FLAGS.html:
    pages = [{"pieces": render.token_strings(tokenizer, r["full_tokens"]),
              "revealed_at": r["revealed_at"], "steps": cfg.steps, "label": f"sample {i}"}
             for i, r in enumerate(results)]
    with open(FLAGS.html, "w") as f:
      f.write(render.html_replay(pages, f"{FLAGS.workdir} step {step}: {cfg.name}, "
                                        f"{cfg.steps} steps"))


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
