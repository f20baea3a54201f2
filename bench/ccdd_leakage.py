"""What CCDD's z channel reveals: its token bound with and without z, beside the masked model's.

  python bench/ccdd_leakage.py [--workdir=runs/ccdd_table] [--steps=600] [--eval_batches=0]

Trains (unless their workdirs hold checkpoints; bench/ccdd_table.py's workdirs and flags)
`configs/ccdd.py` as CCDD and as the masked baseline, then scores on the validation split (the
same batches and noise for every row): the masked model's NELBO, CCDD's token bound with its z
channel (what the README's CCDD table reports: a bound on -log p(x | z)), and CCDD's token
bound with z_t zeroed (`ccdd.eval_without_z`: the network as its z-dropout rows trained it, a
bound on -log p(x) for that network). Prints JSON lines and a markdown table.
"""

import dataclasses
import json

from absl import app, flags

from dlm import api, evaluate
from dlm.samplers import text as sample_text

import ccdd_table  # bench/ccdd_table.py: its workdirs, flags and training
import common  # bench/common.py

flags.DEFINE_integer("eval_batches", 0, "Validation batches (0: the whole split).")
FLAGS = flags.FLAGS
ensure_trained = ccdd_table.ensure_trained


def bound(run, mesh) -> dict:
  out = evaluate.validation_bound(run.config, run.tokenizer, run.model, mesh,
                                  FLAGS.eval_batches)
  return {"bits_per_token": out["bits_per_token"], "tokens": out["tokens"]}


def main(argv):
  del argv
  mesh = sample_text.data_mesh(1)
  rows = []
  masked = api.load(ensure_trained("masked"), params="params", mesh=mesh)
  rows.append(("masked", masked.step, bound(masked, mesh)))
  ccdd = api.load(ensure_trained("ccdd"), params="params", mesh=mesh)
  rows.append(("ccdd, with z", ccdd.step, bound(ccdd, mesh)))
  ccdd.model.options = dataclasses.replace(ccdd.model.options, eval_without_z=True)
  rows.append(("ccdd, z zeroed", ccdd.step, bound(ccdd, mesh)))
  lines = ["| model | training steps | validation bits/token (bound) |", "|---|---|---|"]
  for name, step, b in rows:
    print(json.dumps({"bench": "ccdd_leakage", "model": name, "step": step, **b}), flush=True)
    lines.append(f"| {name} | {step} | {b['bits_per_token']:.3f} |")
  common.emit("\n".join(lines), FLAGS.out)


if __name__ == "__main__":
  app.run(main)
