"""Sequential vs speculative (ASSD) sampling of an any-subset autoregressive model: NFE, wall
time, and whether the samples' distribution is unchanged.

  python bench/speculative.py --workdir=runs/any_order [--judge_workdir=runs/ar_judge]
      [--num_rows=64 --visible=0.05 --draft_lengths=2,5,8 --batch_size=1]

The paper's setting (Guo and Ermon 2025, `_run_speculative_decoding.sh`): validation rows with
95% of their tokens masked (a random int(0.05 L) + 1 kept, the rest infilled left to right),
one sequence per call (`--batch_size=1`), temperature 1. Prints one JSON line per sampler
(sequential, then ASSD for each k): mean NFE per row, NFE per generated token, wall time, and
the samples' statistics that should not move if the distribution is unchanged: the model's own
NLL of the infilled tokens given the kept ones (exact: its left-to-right factorisation), the
mean per-row token entropy, and with `--judge_workdir` (an autoregressive checkpoint with the
same tokenizer) the generative perplexity of the filled rows. A last line gives the same for
the original validation text and the NFE / wall-time ratios.
"""

import json
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from flax import nnx

from dlm import evaluate, samplers
from dlm.errors import DlmError
from dlm.samplers import text as sample_text
from dlm.train import restore

flags.DEFINE_string("workdir", None, "An any_order checkpoint.")
flags.DEFINE_string("judge_workdir", None, "Autoregressive judge for generative perplexity.")
flags.DEFINE_integer("num_rows", 64, "Validation rows to infill.")
flags.DEFINE_float("visible", 0.05, "Fraction of each row kept (the paper: 0.05).")
flags.DEFINE_string("draft_lengths", "2,5,8", "ASSD draft lengths k, comma-separated.")
flags.DEFINE_integer("batch_size", 1, "Rows per sampler call (the paper: 1).")
flags.DEFINE_float("temperature", 1.0, "Sampling temperature.")
flags.DEFINE_integer("seed", 0, "")
FLAGS = flags.FLAGS


def infill_canvases(rows, visible: float, mask_id: int, seed: int):
  """(tokens, given): per row a random int(visible * L) + 1 positions kept, the rest masked."""
  rng = np.random.default_rng(seed)
  tokens = np.stack(rows).astype(np.int32)
  n, length = tokens.shape
  keep = min(length - 1, int(visible * length) + 1)
  given = np.zeros((n, length), bool)
  for i in range(n):
    given[i, rng.choice(length, keep, replace=False)] = True
  return np.where(given, tokens, mask_id).astype(np.int32), given


def model_nll(model, tokens, given) -> tuple[float, float]:
  """The AS-ARM's own NLL (nats per infilled token) of the infilled tokens given the kept ones,
  left to right: -log p(x_masked | x_kept), exact under the model; and the standard error of
  that mean over rows (rows are independent; a row's tokens are not)."""
  graphdef, state = nnx.split(model)

  @jax.jit
  def nll(state, x, g):
    m = nnx.merge(graphdef, state)
    levels = jnp.where(g, 0, jnp.cumsum(~g, axis=1)).astype(jnp.int32)
    logits = m.denoise(x, levels)
    picked = jnp.take_along_axis(logits, x[..., None], axis=-1)[..., 0]
    return jnp.where(g, 0.0, jax.nn.logsumexp(logits, axis=-1) - picked).sum(axis=1)

  per_row = np.concatenate([np.asarray(nll(state, tokens[i:i + 16], given[i:i + 16]))
                            for i in range(0, len(tokens), 16)])
  counts = np.asarray((~given).sum(axis=1), np.float64)
  ratio = per_row.sum() / counts.sum()
  # delta-method standard error of a ratio of sums over independent rows
  resid = (per_row - ratio * counts) / counts.mean()
  return float(ratio), float(resid.std(ddof=1) / math.sqrt(len(counts)))


def text_stats(model, judge, tokens, given) -> dict:
  nll, se = model_nll(model, jnp.asarray(tokens), jnp.asarray(given))
  out = {"model_nll": round(nll, 4), "model_nll_se": round(se, 4),
         "entropy_bits": round(evaluate.sample_entropy(list(tokens)), 4)}
  out["model_perplexity"] = round(math.exp(out["model_nll"]), 3)
  if judge is not None:
    out["gen_perplexity"] = round(
        evaluate.generative_perplexity(judge, [list(r) for r in tokens])["gen_perplexity"], 3)
  return out


def run_samplers(model, cfgs, tokens, given, batch_size: int, seed: int):
  """All rows, `batch_size` per call, through every sampler: for each sampler the samples,
  the NFE per row and its wall time. Each is compiled first (one warm-up call); then the
  samplers take turns on each batch, so a shared machine's load falls on all of them alike."""
  def call(cfg, i):
    canvas = samplers.Canvas(jnp.asarray(tokens[i:i + batch_size]),
                             jnp.asarray(given[i:i + batch_size]))
    return samplers.generate(model, cfg, jax.random.fold_in(jax.random.PRNGKey(seed), i),
                             canvas)

  for cfg in cfgs:
    jax.block_until_ready(call(cfg, 0))  # compile
  outs, walls = [[] for _ in cfgs], [0.0] * len(cfgs)
  for i in range(0, len(tokens), batch_size):
    for c, cfg in enumerate(cfgs):
      start = time.perf_counter()
      outs[c].append(jax.device_get(jax.block_until_ready(call(cfg, i))))
      walls[c] += time.perf_counter() - start
  return [(np.concatenate([o.tokens for o in out]), np.concatenate([o.nfe for o in out]), wall)
          for out, wall in zip(outs, walls)]


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)
  if not FLAGS.workdir:
    raise DlmError("--workdir is required")
  if FLAGS.num_rows % FLAGS.batch_size:
    raise DlmError("--batch_size must divide --num_rows")
  mesh = sample_text.data_mesh(FLAGS.batch_size)
  config, tokenizer, model, step = restore.load(FLAGS.workdir, mesh=mesh)
  if config.model.family != "any_order":
    raise DlmError(f"{FLAGS.workdir!r} holds a {config.model.family!r} model, not any_order")
  judge = None
  if FLAGS.judge_workdir:
    j_config, j_tok, judge, _ = restore.load(FLAGS.judge_workdir, "params",
                                                          mesh=mesh)
    if j_config.model.family != "autoregressive" or j_tok.fingerprint != tokenizer.fingerprint:
      raise DlmError("the judge must be an autoregressive model with the same tokenizer")
  rows = evaluate.validation_rows(config, tokenizer, mesh, FLAGS.num_rows)
  if len(rows) < FLAGS.num_rows:
    raise DlmError(f"only {len(rows)} full validation rows")
  tokens, given = infill_canvases(rows, FLAGS.visible, tokenizer.mask_id, FLAGS.seed)
  generated = int((~given).sum(1).mean())
  common = {"bench": "speculative", "workdir": FLAGS.workdir, "ckpt_step": step,
            "rows": FLAGS.num_rows, "length": tokens.shape[1],
            "generated_per_row": generated, "batch_size": FLAGS.batch_size,
            "temperature": FLAGS.temperature, "device": jax.devices()[0].device_kind}
  runs = []
  settings = [("sequential", 1)] + [("assd", int(k)) for k in FLAGS.draft_lengths.split(",")]
  cfgs = [samplers.SamplerConfig(name=name, draft_length=k, temperature=FLAGS.temperature)
          for name, k in settings]
  with jax.set_mesh(mesh):
    results = run_samplers(model, cfgs, tokens, given, FLAGS.batch_size, FLAGS.seed)
    for (name, k), (filled, nfe, wall) in zip(settings, results):
      assert (filled[given] == tokens[given]).all()
      assert (nfe <= (~given).sum(1)).all(), "NFE above the number of generated tokens"
      row = {**common, "sampler": name, "k": k if name == "assd" else None,
             "mean_nfe": round(float(nfe.mean()), 2), "max_nfe": int(nfe.max()),
             "nfe_per_token": round(float(nfe.sum() / (~given).sum()), 4),
             "wall_s": round(wall, 3), "wall_s_per_row": round(wall / FLAGS.num_rows, 4),
             **text_stats(model, judge, filled, given)}
      runs.append(row)
      print(json.dumps(row), flush=True)
    reference = text_stats(model, judge, np.stack(rows).astype(np.int32), given)
  base = runs[0]
  summary = {"bench": "speculative_summary", "validation_text": reference,
             **{f"k{r['k']}": {"nfe_ratio": round(base["mean_nfe"] / r["mean_nfe"], 3),
                               "speedup": round(base["wall_s"] / r["wall_s"], 3)}
                for r in runs[1:]}}
  print(json.dumps(summary))


if __name__ == "__main__":
  app.run(main)
