"""NeoDiff's optimised inference schedule (Li, Gao, Xu, ACL 2025 §3.5; official
`scripts/iwslt14_de_en/optimize_neodiff_schedule.py`): Bayesian optimisation of the extrinsic
time grid against validation BLEU.

  python -m dlm.neodiff_schedule --workdir=runs/sum_neodiff --steps=10 \\
      [--num_pairs=64 --init_points=10 --iterations=30] [--output=FILE]

As the official script: K variables in (0, 1), sorted into the K next-times of a K-step decode
(`nonsim.from_custom_timesteps`), maximised with `bayes_opt` (GP-UCB, random_state 1) on the
BLEU of the first `num_pairs` validation pairs. Writes the best schedule (default
WORKDIR/neodiff_schedule_<K>.json) for `sample.py --schedule` and `dlm.evaluate --schedule`;
prints JSON with the uniform grid's BLEU and the optimised one's on those pairs. Report held-out
numbers on other pairs (`bench/summarize_table.py` uses the pairs after these).
"""

from __future__ import annotations

import os

from absl import app, flags

from dlm import cli, evaluate, samplers
from dlm.errors import DlmError
from dlm.processes import nonsim
from dlm.samplers import text as sample_text
from dlm.train import restore

FLAGS = flags.FLAGS


def optimise(workdir: str, steps: int, *, num_pairs: int = 64, init_points: int = 10,
             iterations: int = 30, seed: int = 0, output: str | None = None) -> dict:
  from bayes_opt import BayesianOptimization  # pylint: disable=g-import-not-at-top

  config = restore.read_config(workdir)
  if config.model.family != "neodiff":
    raise DlmError(f"{workdir!r} holds a {config.model.family!r} model; the schedule search "
                   "is for NeoDiff models")
  if not config.data.source_feature:
    raise DlmError(f"{workdir!r} was trained on unconditional text; the schedule is optimised "
                   "on validation BLEU of a pair task")
  pairs = evaluate.validation_pairs(config, num_pairs)
  mesh = sample_text.data_mesh(len(pairs))
  config, tokenizer, model, step = restore.load(workdir, mesh=mesh)
  sampling = samplers.SamplerConfig(name="neodiff", steps=steps)

  def bleu(times) -> float:
    return evaluate.pair_bleu(model, tokenizer, config, sampling, pairs, seed=seed,
                              batch_size=len(pairs), mesh=mesh, times=times)["bleu"]

  def objective(**x) -> float:
    try:
      times = nonsim.from_custom_timesteps([x[f"x{i:02d}"] for i in range(steps)])
    except DlmError:  # coinciding times: not a schedule
      return 0.0
    return bleu(times)

  uniform = bleu(nonsim.extrinsic_grid(steps))
  opt = BayesianOptimization(f=objective, pbounds={f"x{i:02d}": (1e-3, 1 - 1e-3)
                                                   for i in range(steps)},
                             random_state=1, verbose=0)
  opt.probe({f"x{i:02d}": 1.0 - (i + 1) / steps + (1e-3 if i == steps - 1 else 0.0)
             for i in range(steps)})  # the uniform grid itself
  opt.maximize(init_points=init_points, n_iter=iterations)
  best = opt.max
  times = nonsim.from_custom_timesteps([best["params"][f"x{i:02d}"] for i in range(steps)])
  output = output or os.path.join(workdir, f"neodiff_schedule_{steps}.json")
  nonsim.save_schedule(output, times)
  return {"workdir": workdir, "step": step, "steps": steps, "pairs": len(pairs),
          "evaluations": len(opt.res), "uniform_bleu": uniform, "optimised_bleu": best["target"],
          "schedule": [round(float(v), 4) for v in times], "output": output}


def define_flags() -> None:
  cli.define_workdir_flags("NeoDiff checkpoint trained on a pair task.", step=False,
                           params=False)
  flags.DEFINE_integer("steps", 10, "Decoding steps K (K variables are optimised).")
  flags.DEFINE_integer("num_pairs", 64, "Validation pairs scored per evaluation.")
  flags.DEFINE_integer("init_points", 10, "Random initial points.")
  flags.DEFINE_integer("iterations", 30, "Bayesian-optimisation iterations.")
  flags.DEFINE_integer("seed", 0, "Sampling seed (the same for every evaluation).")
  cli.define_output_flag("Schedule JSON (default WORKDIR/neodiff_schedule_K.json).")


def _optimise_flags(workdir: str) -> dict:
  for name, least in (("steps", 1), ("num_pairs", 1), ("init_points", 0), ("iterations", 0)):
    if FLAGS[name].value < least:
      raise DlmError(f"--{name} must be >= {least}, got {FLAGS[name].value}")
  return optimise(workdir, FLAGS.steps, num_pairs=FLAGS.num_pairs,
                  init_points=FLAGS.init_points, iterations=FLAGS.iterations, seed=FLAGS.seed,
                  output=FLAGS.output)


if __name__ == "__main__":
  define_flags()
  app.run(cli.json_command(_optimise_flags), flags_parser=cli.parse_flags)
