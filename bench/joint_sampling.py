"""ADJUST against marginal parallel unmasking at 1-4 tokens per full pass (README table).

  python bench/joint_sampling.py --head=runs/joint_head [--num_samples=1024 --seed=0]

Loads a trained joint head (configs/joint_head.py; its workdir holds the frozen base too) and
draws `num_samples` unconditional sequences of the base's row length with:
* `exact`: one token per full pass, lowest entropy first: the reference (the base's joint);
  a second, independent exact set gives the MAUVE a perfect sampler reaches at this size;
* `adjust` and `marginal` at k + 1 = 1, 2, 3, 4 tokens per full pass.
For each: MAUVE against the reference (mean over `mauve_seeds` k-means seeds, MiniLM sentence
features as dlm.features.mauve_score), the NLL per token of the samples under the base model
(the exact lowest-entropy sampler's log-likelihood, `joint.log_prob_exact`, on the first
`nll_samples`), mean full passes
and sampler passes per sequence, estimated forward FLOPs per sequence, and the wall time of
the compiled sampler. Prints one JSON object.
"""

import json
import math
import os
import sys
import time

import jax
import numpy as np
from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dlm import samplers  # noqa: E402
from dlm.errors import DlmError  # noqa: E402
from dlm.samplers import joint_head as joint_lib  # noqa: E402
from dlm.samplers.core import SamplerConfig, blank_canvas  # noqa: E402
from dlm.train import restore  # noqa: E402

flags.DEFINE_string("head", None, "the joint head's workdir")
flags.DEFINE_integer("num_samples", 1024, "sequences per sampler setting (MAUVE cannot rank "
                     "close samplers at 256)")
flags.DEFINE_integer("batch", 256, "sequences per sampler call")
flags.DEFINE_integer("length", 0, "tokens per sequence; 0 = the head's data.seq_len")
flags.DEFINE_string("tokens_per_pass", "1,2,3,4", "k + 1 values")
flags.DEFINE_integer("mauve_seeds", 3, "k-means seeds MAUVE is averaged over")
flags.DEFINE_integer("nll_samples", 256, "the first N samples of each set are scored (NLL)")
flags.DEFINE_integer("seed", 0, "sampling seed")
FLAGS = flags.FLAGS


def _features(texts):
  from dlm import features  # pylint: disable=g-import-not-at-top

  return features.featurizer()(list(texts))


def _mauve(p, q, seeds):
  import mauve  # pylint: disable=g-import-not-at-top

  return float(np.mean([mauve.compute_mauve(p_features=p, q_features=q, seed=s,
                                            verbose=False).mauve for s in range(seeds)]))


def _draw(model, cfg, length, seed):
  """(tokens (n, length), nfe, sampler passes, wall seconds without compilation)."""
  n, b = FLAGS.num_samples, min(FLAGS.batch, FLAGS.num_samples)
  canvas = blank_canvas(b, length, model.mask_id)
  fn = samplers.compiled(model, cfg, jax.random.PRNGKey(seed), canvas)
  tokens, nfe, head, wall = [], [], [], 0.0
  for i in range(math.ceil(n / b)):
    start = time.perf_counter()
    out = jax.block_until_ready(fn(jax.random.fold_in(jax.random.PRNGKey(seed), i)))
    wall += time.perf_counter() - start
    out = jax.device_get(out)
    tokens.append(out.tokens)
    nfe.append(out.nfe)
    head.append(out.sampler_passes)
  return (np.concatenate(tokens)[:n], np.concatenate(nfe)[:n], np.concatenate(head)[:n], wall)


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)
  if not FLAGS.head:
    raise DlmError("--head (a joint head's workdir) is required")
  config, tokenizer, model, step = restore.load(FLAGS.head)
  if config.model.family != "joint_head":
    raise DlmError(f"{FLAGS.head!r} holds a {config.model.family} model, not a joint head")
  length = FLAGS.length or config.data.seq_len
  given = np.zeros((min(FLAGS.batch, FLAGS.nll_samples, FLAGS.num_samples), length), bool)
  nll_fn = jax.jit(lambda tokens: joint_lib.log_prob_exact(model, tokens, given))
  flops = joint_lib.flops(model, length)

  def nll(tokens):
    b = given.shape[0]
    tokens = tokens[:FLAGS.nll_samples]
    total = sum(float(np.sum(jax.device_get(nll_fn(tokens[i:i + b]))))
                for i in range(0, len(tokens), b))
    return -total / tokens.size

  def texts(tokens):
    return [tokenizer.decode(t.tolist(), skip_special_tokens=True) for t in tokens]

  start = time.perf_counter()
  exact_cfg = SamplerConfig(name="exact", steps=length)
  ref, ref_nfe, _, ref_wall = _draw(model, exact_cfg, length, FLAGS.seed)
  ref_features = _features(texts(ref))
  other, other_nfe, _, other_wall = _draw(model, exact_cfg, length, FLAGS.seed + 1)
  rows = [{"sampler": "exact", "tokens_per_pass": 1, "reference": True,
           "nll": nll(ref), "full_passes": float(ref_nfe.mean()), "wall_s": ref_wall},
          {"sampler": "exact", "tokens_per_pass": 1, "reference": False,
           "mauve": _mauve(_features(texts(other)), ref_features, FLAGS.mauve_seeds),
           "nll": nll(other), "full_passes": float(other_nfe.mean()), "sampler_passes": 0.0,
           "gflops_per_seq": float(other_nfe.mean()) * flops["full_pass"] / 1e9,
           "wall_s": other_wall}]
  for k1 in [int(v) for v in FLAGS.tokens_per_pass.split(",")]:
    for name in ("adjust", "marginal"):
      cfg = SamplerConfig(name=name, steps=math.ceil(length / k1))
      tokens, nfe, head, wall = _draw(model, cfg, length, FLAGS.seed + 2)
      rows.append({
          "sampler": name, "tokens_per_pass": k1,
          "mauve": _mauve(_features(texts(tokens)), ref_features, FLAGS.mauve_seeds),
          "nll": nll(tokens), "full_passes": float(nfe.mean()),
          "sampler_passes": float(head.mean()),
          "gflops_per_seq": float(nfe.mean() * flops["full_pass"]
                                  + head.mean() * flops["sampler_pass"]) / 1e9,
          "wall_s": wall, "example": texts(tokens[:1])[0]})
  print(json.dumps({"head": FLAGS.head, "step": step, "base": config.train.init_from,
                    "length": length, "num_samples": FLAGS.num_samples,
                    "mauve_seeds": FLAGS.mauve_seeds, "seed": FLAGS.seed,
                    "flops": flops, "device": jax.devices()[0].platform,
                    "total_s": round(time.perf_counter() - start, 1), "rows": rows}))


if __name__ == "__main__":
  app.run(main)
