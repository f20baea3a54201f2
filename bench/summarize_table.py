"""The README's table for the continuous families and the code-summarisation task, one command.

  python bench/summarize_table.py [--root=runs/summarize_table] [--train_steps=400]
      [--docs_steps=N] [--out=FILE.md]

1. Trains (unless already trained in --root) the four families on `configs/summarize.py`
   (stdlib function source -> first docstring sentence), and masked, autoregressive,
   continuous and NeoDiff models on the quickstart corpus (`configs/quickstart.py:bpe`,
   `configs/continuous.py`, `configs/neodiff.py`), each group for the same number of steps.
2. Optimises NeoDiff's extrinsic schedule at 10 and 20 steps by Bayesian optimisation on the
   first `--bo_pairs` validation pairs (`dlm.neodiff_schedule`).
3. Scores BLEU (sacrebleu) on the next `--num_pairs` validation pairs (held out from the schedule
   search) at 10 and 20 steps: masked (low-confidence, greedy), continuous (DDPM), NeoDiff
   (uniform and optimised schedule), and the AR baseline (greedy, one step per token).
4. Unconditional samples of the continuous, NeoDiff and masked models: generative perplexity
   under the autoregressive model, unigram entropy, MAUVE against validation text.
Prints JSON lines and the markdown tables.
"""

import json
import os

from absl import app, flags

from dlm import config as config_lib
from dlm import evaluate, neodiff_schedule, samplers
from dlm.processes import nonsim
from dlm.train import loop

import common  # bench/common.py
from dlm.train import restore

flags.DEFINE_string("root", "runs/summarize_table", "Workdirs of this table's models.")
flags.DEFINE_integer("train_steps", 400, "Training steps of the summarisation models.")
flags.DEFINE_integer("docs_steps", 0, "Training steps of the unconditional models (0: the same).")
flags.DEFINE_integer("num_pairs", 256, "Held-out validation pairs for BLEU.")
flags.DEFINE_integer("bo_pairs", 64, "Validation pairs for the schedule search.")
flags.DEFINE_integer("bo_iterations", 20, "Bayesian-optimisation iterations per schedule.")
flags.DEFINE_integer("num_samples", 64, "Unconditional samples per model.")
flags.DEFINE_integer("sample_steps", 128, "Steps of the unconditional samples.")
flags.DEFINE_string("out", None, "Also write the markdown tables here.")
flags.DEFINE_string("data_dir", "", "data.data_dir for training (default: TFDS's).")
FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILIES = ("masked", "autoregressive", "continuous", "neodiff")


def ensure_trained(workdir: str, config_path: str, **overrides) -> None:
  config = config_lib.from_file(os.path.join(ROOT, config_path), **{
      "train.progress": False, "data.data_dir": FLAGS.data_dir, **overrides})
  loop.train(config, workdir)  # resumes; returns at once if already at train.steps


def show(row) -> None:
  print(json.dumps(row), flush=True)


def bleu_rows(workdirs) -> list[str]:
  config = restore.read_config(workdirs["neodiff"])
  pairs = evaluate.validation_pairs(config, FLAGS.num_pairs, offset=FLAGS.bo_pairs)
  table, schedules, rows = {}, {}, []
  for steps in (10, 20):
    r = neodiff_schedule.optimise(workdirs["neodiff"], steps, num_pairs=FLAGS.bo_pairs,
                                  iterations=FLAGS.bo_iterations)
    show({"bench": "neodiff_schedule", **r})
    schedules[steps] = nonsim.load_schedule(r["output"])
  runs = [("masked, low-confidence (greedy)", "masked", "low_confidence", None),
          ("continuous, DDPM", "continuous", "ddpm", None),
          ("NeoDiff, uniform schedule", "neodiff", "neodiff", None),
          ("NeoDiff, optimised schedule", "neodiff", "neodiff", "optimised")]
  for label, family, name, schedule in runs:
    for steps in (10, 20):
      times = schedules[steps] if schedule else None
      cfg = samplers.SamplerConfig(name=name, steps=steps, temperature=0.0)
      r = _pair_eval(workdirs[family], cfg, pairs, times)
      show({"bench": "summarize_bleu", "model": label, **r})
      rows.append(r)
      table.setdefault(label, {})[steps] = r["bleu"]
  cfg = samplers.SamplerConfig(name="autoregressive", steps=1, temperature=0.0)
  r = _pair_eval(workdirs["autoregressive"], cfg, pairs, None)
  show({"bench": "summarize_bleu", "model": "autoregressive", **r})
  steps_trained = sorted({row["step"] for row in rows} | {r["step"]})
  lines = [f"Code summarisation BLEU (sacrebleu, {len(pairs)} held-out validation pairs; "
           f"checkpoints at step {'/'.join(map(str, steps_trained))}, quickstart size):", "",
           "| model | 10 steps | 20 steps |", "|---|---|---|"]
  for label, by_steps in table.items():
    lines.append(f"| {label} | {by_steps[10]:.2f} | {by_steps[20]:.2f} |")
  lines.append(f"| autoregressive (greedy, a step per token) | {r['bleu']:.2f} | |")
  return lines


def _pair_eval(workdir, cfg, pairs, times) -> dict:
  from dlm.samplers import text as sample_text  # pylint: disable=g-import-not-at-top

  mesh = sample_text.data_mesh(64)
  config, tokenizer, model, step = restore.load(workdir, mesh=mesh)
  out = evaluate.pair_bleu(model, tokenizer, config, cfg, pairs, batch_size=64, mesh=mesh,
                           times=times)
  return {"workdir": workdir, "step": step, **out}


def sample_rows(workdirs) -> list[str]:
  judge = workdirs["autoregressive_docs"]
  runs = [("masked (ancestral)", workdirs["masked_docs"], "ancestral"),
          ("continuous (DDPM)", workdirs["continuous_docs"], "ddpm"),
          ("NeoDiff (uniform schedule)", workdirs["neodiff_docs"], "neodiff")]
  lines = [f"Unconditional samples ({FLAGS.num_samples} x 128 tokens, {FLAGS.sample_steps} "
           "steps; quickstart data and size; generative perplexity under the autoregressive "
           "model trained alike):", "",
           "| model | training steps | gen. PPL | entropy (bits) | MAUVE (MiniLM) |", "|---|---|---|---|---|"]
  for label, workdir, name in runs:
    cfg = samplers.SamplerConfig(name=name, steps=FLAGS.sample_steps)
    r = evaluate.evaluate(workdir, judge_workdir=judge, sampler=cfg,
                          num_samples=FLAGS.num_samples, mauve=True)
    show({"bench": "unconditional_samples", "model": label, **r})
    s = r["samples"]
    lines.append(f"| {label} | {r['step']} | {s['gen_perplexity']:.1f} | "
                 f"{s['entropy_bits']:.2f} | {s['mauve']:.3f} |")
  return lines


def main(argv):
  del argv
  workdirs = {f: os.path.join(FLAGS.root, f"summarize_{f}") for f in FAMILIES}
  for f in FAMILIES:
    ensure_trained(workdirs[f], f"configs/summarize.py:{f}", **{"train.steps": FLAGS.train_steps})
  lines = bleu_rows(workdirs)
  print("\n".join(lines), flush=True)
  docs_steps = FLAGS.docs_steps or FLAGS.train_steps
  quickstart = "configs/quickstart.py:bpe"
  for f, path in (("masked", quickstart), ("autoregressive", quickstart),
                  ("continuous", "configs/continuous.py"), ("neodiff", "configs/neodiff.py")):
    workdirs[f"{f}_docs"] = os.path.join(FLAGS.root, f"{f}_docs")
    ensure_trained(workdirs[f"{f}_docs"], path,
                   **{"train.steps": docs_steps, "model.family": f})
  lines += [""] + sample_rows(workdirs)
  text = "\n".join(lines)
  common.emit(text, FLAGS.out)


if __name__ == "__main__":
  app.run(main)
