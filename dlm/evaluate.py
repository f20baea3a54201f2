"""Evaluation of a checkpoint: `python -m dlm.evaluate --workdir=DIR [options]`, JSON out.

* validation bound: NELBO in bits per token and the perplexity bound (an AR workdir: exact NLL);
* generative perplexity of samples under an AR judge checkpoint, always next to the samples'
  entropy (low-entropy samples game generative perplexity: duo#16); a judge with another
  tokenizer (GPT-2 converted by `python -m dlm.convert`, the papers' judge) scores the samples'
  text tokenized again by its own tokenizer after its bos (`judge.retokenized` in the JSON);
* MAUVE (Pillutla et al. 2021, the `mauve-text` package) between samples and held-out
  validation text, on `dlm.features`' features: MiniLM sentence embeddings by default (not
  comparable with papers), GPT-2 Large's last-token states (as papers) from a converted
  workdir given as `--mauve_features`;
* known words: the fraction of the samples' words (runs of letters) that occur in the training
  split (`textmetrics.known_words`), beside the same fraction for as many validation rows: what
  tells letter salad from words where a small judge's perplexity does not;
* infilling accuracy: a middle span of each validation row masked and filled by the sampler;
* pair (source -> target) models: corpus BLEU (sacrebleu) of the generated targets against the
  validation references, and the references' conditional likelihood given their sources
  (`dlm.likelihood`: exact for the autoregressive family, the masked ELBO's Monte Carlo
  estimate) in bits per target token.
Every family is sampled with its own samplers (default: the family's first).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx

from dlm import api, cli, features, likelihood, samplers, textmetrics
from dlm.data import inputs, pipeline, sources
from dlm.errors import DlmError
from dlm.samplers import text as sample_text
from dlm.train import loop
from dlm.train import restore
from dlm.train import step as step_lib

LN2 = math.log(2.0)


# What each family's validation number averages over. The autoregressive NLL cannot score the
# first token of a document piece (nothing precedes it in its row), the diffusion bounds score
# every token: both counts are reported, so the two can be read side by side.
COUNTED = {
    "autoregressive": "real tokens with a predecessor in their document piece (the first token "
                      "of each piece is not scored) and not given",
}
COUNTED_DEFAULT = "every real token that is not given (a pair's source)"


def validation_bound(config, tokenizer, model, mesh, eval_batches: int = 0,
                     progress: bool = False) -> dict:
  """The training bound on the evaluation split (AR: exact NLL), as bits and perplexity, over
  `eval_batches` batches (0 = the whole split), with progress bars on stderr if `progress`."""
  graphdef, params = nnx.split(model)
  params = nnx.to_pure_dict(params)
  param_shardings = jax.tree.map(lambda x: x.sharding, params)
  batch_sharding = pipeline.batch_sharding(mesh, config.mesh.rules)
  evaluator = loop.Evaluator(config, tokenizer, mesh, step_lib.make_eval_step(
      graphdef, param_shardings, batch_sharding), batches=eval_batches, progress=progress)
  with jax.set_mesh(mesh):
    out = evaluator(params)
  counts = {"tokens": int(out["tokens"]), "real_tokens": evaluator.real_tokens,
            "counted": COUNTED.get(config.model.family, COUNTED_DEFAULT),
            "eval_batches": eval_batches}
  if "bits_per_token" not in out:  # continuous families: a training loss, not a bound
    return {**out, **counts, "bound": False}
  return {"bits_per_token": out["bits_per_token"], "perplexity": out["perplexity"], **counts,
          "unigram_bits_per_token": evaluator.unigram_bits,
          "exact": config.model.family == "autoregressive", "bound": True}


def validation_pairs(config, n: int, offset: int = 0) -> list[tuple[str, str]]:
  """n (source, target) pairs of the evaluation split, from the `offset`-th."""
  return inputs.open_pairs(config.data, config.data.eval_split)[offset:offset + n]


def pair_bleu(model, tokenizer, config, sampling: samplers.SamplerConfig, pairs, *, seed: int = 0,
              batch_size: int = 64, mesh=None, times=None) -> dict:
  """Generates a target for every source and scores the corpus BLEU against the references."""
  family = model.family
  rows = [sample_text.canvas_template(tokenizer, family, length=config.data.seq_len, source=src,
                                      source_len=config.data.source_len)
          for src, _ in pairs]
  start = time.perf_counter()
  out = sample_text.fill(model, tokenizer, sampling, rows, seed=seed, batch_size=batch_size,
                         mesh=mesh, times=times)
  wall = time.perf_counter() - start
  hyps = [r["generated"].strip() for r in out]
  return {"bleu": textmetrics.bleu(hyps, [tgt for _, tgt in pairs]), "pairs": len(pairs),
          "sampler": sampling.name, "steps": sampling.steps, "wall_s": wall,
          "mean_nfe": float(np.mean([r["nfe"] for r in out])),
          "examples": [{"source": src[:200], "reference": tgt, "generated": h}
                       for (src, tgt), h in zip(pairs[:3], hyps[:3])]}


def pair_likelihood(model, tokenizer, config, pairs, *, samples: int = 128,
                    batch_size: int = 32, seed: int = 0) -> dict:
  """The references' log-likelihood given their sources, each scored as its training row
  holds it: `target [eos]` after the `[bos] source [eos]` prefix (the target cut as there);
  in bits per target token (the closing eos counted) over all pairs."""
  requests = []
  for source, target in pairs:
    tokens, given = pipeline.pair_prompt(tokenizer, source, config.data.seq_len,
                                         config.data.source_len)
    room = config.data.seq_len - int(given.sum()) - 1
    requests.append((tokens[given].tolist(),
                     tokenizer.encode(target)[:room].tolist() + [tokenizer.eos_id]))
  scorer = likelihood.Scorer(model, samples=samples, batch_size=batch_size, seed=seed,
                             max_length=config.data.seq_len)
  scores = scorer.score_many(requests)
  count = sum(len(target) for _, target in requests)
  out = {"reference_bits_per_token": -sum(s.value for s in scores) / count / LN2,
         "reference_tokens": count, "exact": model.family == "autoregressive"}
  if model.family != "autoregressive":  # independent requests: their errors add up
    variance = sum(s.stderr**2 for s in scores)
    out["reference_stderr_bits"] = math.sqrt(variance) / count / LN2
    out["mc_samples"] = samples
  return out


def sample_entropy(token_lists) -> float:
  """Mean over samples of the entropy (bits) of each sample's own token distribution."""
  values = []
  for ids in token_lists:
    if len(ids):
      p = np.bincount(np.asarray(ids)) / len(ids)
      p = p[p > 0]
      values.append(float(-(p * np.log2(p)).sum()))
  return float(np.mean(values)) if values else 0.0


def judge_tokens(judge_tokenizer, texts) -> list[list[int]]:
  """Samples' texts in a judge's own tokens, each after its bos (so that every token of the
  text is scored): how a judge with another tokenizer reads them."""
  return [[judge_tokenizer.bos_id, *judge_tokenizer.encode(t).tolist()] for t in texts]


def generative_perplexity(judge, token_lists, batch_size: int = 32) -> dict:
  """Perplexity of the samples under an autoregressive judge (first token of each unscored;
  samples longer than a learned-position judge's context are cut to it)."""
  limit = judge.net.cfg.max_positions if judge.net.cfg.positions == "learned" else 0
  truncated = sum(bool(limit) and len(ids) > limit for ids in token_lists)
  token_lists = [list(ids)[:limit or None] for ids in token_lists if len(ids) > 1]
  if not token_lists:
    return {"gen_perplexity": float("nan"), "scored_tokens": 0}
  length = max(len(ids) for ids in token_lists)
  graphdef, params = nnx.split(judge)

  @jax.jit
  def nll(params, tokens, segments):
    model = nnx.merge(graphdef, params)
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    values, scored = model.token_nll({"tokens": tokens, "segment_ids": segments,
                                      "positions": positions})
    return values.sum(), scored.sum()

  total = count = 0.0
  for start in range(0, len(token_lists), batch_size):
    chunk = token_lists[start:start + batch_size]
    tokens = np.zeros((batch_size, length), np.int32)
    segments = np.zeros((batch_size, length), np.int32)
    for i, ids in enumerate(chunk):
      tokens[i, :len(ids)] = ids
      segments[i, :len(ids)] = 1
    s, c = nll(nnx.to_pure_dict(params), tokens, segments)
    total, count = total + float(s), count + float(c)
  out = {"gen_perplexity": math.exp(total / count), "scored_tokens": int(count)}
  if truncated:  # a judge with learned positions reads at most its context
    out["judge_truncated_samples"] = int(truncated)
  return out


VOCABULARY_DOCUMENTS = 200_000  # training documents read for the known-word vocabulary


def training_vocabulary(config) -> tuple[set[str], int]:
  """(the words of the training split's first `VOCABULARY_DOCUMENTS` documents, how many
  documents were read): the reference of `textmetrics.known_words`."""
  known, n = set(), 0
  for doc in itertools.islice(iter(inputs.documents(config.data, config.data.train_split)),
                              VOCABULARY_DOCUMENTS):
    for text in doc if config.data.source_feature else (doc,):  # pairs: both sides
      known.update(textmetrics.words(text))
    n += 1
  return known, n


def validation_rows(config, tokenizer, mesh, n: int) -> list[np.ndarray]:
  """Up to n full rows of validation tokens (no padding), in order."""
  it = inputs.eval_iterator(config, tokenizer, mesh)
  rows = []
  try:
    while len(rows) < n:
      local = it.next_local()
      for tokens, seg in zip(local["tokens"], local["segment_ids"]):
        if (seg > 0).all() and len(rows) < n:
          rows.append(tokens)
  except StopIteration:
    pass
  finally:
    it.close()
  return rows


def infill_accuracy(model, tokenizer, rows, sampling: samplers.SamplerConfig, span: int,
                    seed: int = 0) -> dict:
  """Masks the middle `span` tokens of every row, fills them, and counts exact matches."""
  tokens = np.stack(rows)
  length = tokens.shape[1]
  start = (length - span) // 2
  given = np.ones_like(tokens, bool)
  given[:, start:start + span] = False
  canvas = samplers.Canvas(jnp.asarray(np.where(given, tokens, tokenizer.mask_id)),
                           jnp.asarray(given))
  out = jax.device_get(samplers.generate(model, sampling, jax.random.PRNGKey(seed), canvas))
  filled = out.tokens[:, start:start + span]
  assert (out.tokens[given] == tokens[given]).all()  # given tokens never change
  return {"infill_accuracy": float((filled == tokens[:, start:start + span]).mean()),
          "infill_rows": len(rows), "infill_span": span}


def _on(config, dataset: str | None, split: str | None):
  """A copy of `config` whose evaluation split is `split` of `dataset` (None: unchanged)."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.data.dataset = dataset or config.data.dataset
    config.data.eval_split = split or config.data.eval_split
  return config


def evaluate(workdir: str, *, judge_workdir: str | None = None, which: str = "ema",
             sampler: samplers.SamplerConfig | None = None, num_samples: int = 0,
             mauve: bool = False, infill_rows: int = 0, infill_span: int = 16,
             num_pairs: int = 0, times=None, seed: int = 0, eval_batches: int = 0,
             dataset: str | None = None, split: str | None = None,
             mauve_features: str | None = None, progress: bool = False) -> dict:
  """Scores a workdir (see `define_flags`). `dataset` (a `data.dataset` source: `text:GLOB`,
  `jsonl:GLOB`, `tfds:NAME`) and `split` (default `data.eval_split`): the bound (AR: the exact
  NLL) on another corpus with the run's tokenizer and length, zero-shot perplexity.
  `mauve_features`: what MAUVE compares (`dlm.features`). `progress`: progress bars on
  stderr (validation batches, sampling, MAUVE features)."""
  peek = restore.read_config(workdir)  # the mesh must split both the samples and eval batches
  if dataset:
    sources.builder(_on(peek, dataset, split).data)  # a bad source is refused before loading
  mesh = sample_text.data_mesh(math.gcd(num_samples or peek.train.batch_size,
                                        peek.train.batch_size))
  run = api.load(workdir, params=which, mesh=mesh)
  config, tokenizer, model, step = run.config, run.tokenizer, run.model, run.step
  trained_on = config
  result = {"workdir": workdir, "step": step, "family": config.model.family, "params": which}
  judge = None
  if judge_workdir:
    judge_run = api.load(judge_workdir, params="params", mesh=mesh)
    judge = judge_run.model
    if judge_run.family != "autoregressive":
      raise DlmError(f"the judge {judge_workdir!r} holds a {judge_run.family!r} model; "
                     "it must be autoregressive")
    # Another tokenizer (a converted GPT-2): the samples' text is tokenized again by the
    # judge's, after its bos, so that every token of the text is scored.
    retokenize = judge_run.tokenizer.fingerprint != tokenizer.fingerprint
    missing = judge_run.tokenizer.cannot_encode(tokenizer.characters()) if retokenize else []
    if missing:
      raise DlmError(
          f"the judge {judge_workdir!r} cannot encode {len(missing)} character(s) the model "
          f"can write (e.g. {''.join(missing[:8])!r}): its tokenizer drops them or reads them "
          "as its unknown token, so its perplexity would not score the whole text; use a "
          "judge with a byte-level tokenizer (GPT-2)")
    result["judge"] = {"workdir": judge_workdir, "step": judge_run.step,
                       "retokenized": retokenize}
  if dataset or split:
    config = _on(config, dataset, split)
    result["dataset"] = {"dataset": config.data.dataset, "split": config.data.eval_split}
  result["validation"] = validation_bound(config, tokenizer, model, mesh, eval_batches,
                                          progress)
  family = config.model.family
  sampler = sampler or samplers.SamplerConfig()
  if not sampler.name:
    sampler = dataclasses.replace(sampler, name=samplers.default_sampler(family))
  pairs = bool(config.data.source_feature)
  if num_pairs and not pairs:
    raise DlmError(f"--num_pairs needs a model trained on pairs; {workdir!r} was trained on "
                   f"unconditional text ({config.data.dataset})")
  if num_pairs:
    chosen = validation_pairs(config, num_pairs)
    result["pairs"] = pair_bleu(model, tokenizer, config, sampler, chosen, seed=seed,
                                mesh=mesh, times=times)
    if family in likelihood.FAMILIES:
      result["pairs"].update(pair_likelihood(model, tokenizer, config, chosen, seed=seed))
  if num_samples and not pairs:
    start = time.perf_counter()
    out = sample_text.sample(model, tokenizer, sampler, num_samples=num_samples,
                             length=config.data.seq_len, add_bos=config.data.add_bos,
                             seed=seed, mesh=mesh, times=times, progress=progress)
    wall = time.perf_counter() - start
    ids = [r["tokens"] for r in out]
    result["samples"] = {
        "sampler": sampler.name, "steps": sampler.steps, "num_samples": num_samples,
        "mean_nfe": float(np.mean([r["nfe"] for r in out])), "wall_s": wall,
        "mean_length": float(np.mean([len(i) for i in ids])),
        "entropy_bits": sample_entropy(ids),
    }
    known, documents = training_vocabulary(trained_on)
    rows = validation_rows(config, tokenizer, mesh, num_samples)
    refs = [tokenizer.decode(sample_text.cut(r, np.zeros(len(r), bool), tokenizer),
                             skip_special_tokens=True) for r in rows]
    result["samples"].update(textmetrics.known_words([r["text"] for r in out], known))
    result["samples"]["known_words_validation"] = textmetrics.known_words(refs, known)[
        "known_words"]  # the same measure on real text of the validation split
    result["samples"]["vocabulary_documents"] = documents
    if judge is not None:
      judged = judge_tokens(judge_run.tokenizer, [r["text"] for r in out]) if retokenize else ids
      result["samples"].update(generative_perplexity(judge, judged))
    if mauve:
      result["samples"]["mauve"] = features.mauve_score(
          [r["text"] for r in out], refs, seed=seed, features=mauve_features,
          progress=progress)
      result["samples"]["mauve_features"] = features.describe(mauve_features)
  if infill_rows and family != "autoregressive" and not pairs:
    rows = validation_rows(config, tokenizer, mesh, infill_rows)
    result["infill"] = infill_accuracy(model, tokenizer, rows, sampler, infill_span, seed)
  return result


FLAGS = flags.FLAGS


def define_flags() -> None:
  cli.define_workdir_flags("Checkpoint directory to evaluate.", step=False)
  cli.define_sampling_flags("Sampler for samples, pairs and infilling (default: the family's "
                            "first).")
  flags.DEFINE_string("judge_workdir", None, "Autoregressive checkpoint scoring the samples "
                      "(e.g. GPT-2 converted by python -m dlm.convert; any tokenizer).")
  flags.DEFINE_integer("eval_batches", 0, "Validation batches for the bound (0: the whole "
                       "split).")
  flags.DEFINE_string("dataset", None, "Score the bound on this data source instead of the "
                      "run's own (text:GLOB, jsonl:GLOB, parquet:GLOB, hf:NAME, tfds:NAME): "
                      "zero-shot perplexity.")
  flags.DEFINE_string("split", None, "The split to score (default: the run's data.eval_split).")
  flags.DEFINE_integer("num_samples", 0, "Samples to generate and score (0: none).")
  flags.DEFINE_bool("mauve", False, "Compute MAUVE against validation text.")
  flags.DEFINE_string("mauve_features", None, "What MAUVE compares: an autoregressive "
                      "workdir (GPT-2 Large converted by python -m dlm.convert: its last-token "
                      "states, as papers) or a BERT-style encoder directory (default: "
                      "all-MiniLM-L6-v2, not comparable with papers).")
  flags.DEFINE_integer("num_pairs", 0, "Pair models: validation pairs for BLEU and the "
                       "references' likelihood given their sources (0: none).")
  flags.DEFINE_integer("infill_rows", 0, "Validation rows for infilling accuracy (0: skip).")
  flags.DEFINE_integer("infill_span", 16, "Masked span length for infilling accuracy.")
  cli.define_output_flag("Also write the JSON here.")


def _evaluate_flags(workdir: str) -> dict:
  options = cli.sampling_options()
  for name in ("eval_batches", "num_samples", "num_pairs", "infill_rows"):
    if FLAGS[name].value < 0:
      raise DlmError(f"--{name} must be >= 0, got {FLAGS[name].value}")
  if FLAGS.infill_span <= 0:
    raise DlmError("--infill_span must be positive")
  if FLAGS.mauve_features and not FLAGS.mauve:
    raise DlmError("--mauve_features chooses MAUVE's encoder: it needs --mauve")
  if FLAGS.mauve_features:
    features.check(FLAGS.mauve_features)
  return evaluate(workdir, judge_workdir=FLAGS.judge_workdir, which=FLAGS.params,
                  sampler=samplers.SamplerConfig(name=FLAGS.sampler or "", **options),
                  num_samples=FLAGS.num_samples, mauve=FLAGS.mauve,
                  infill_rows=FLAGS.infill_rows, infill_span=FLAGS.infill_span,
                  num_pairs=FLAGS.num_pairs,
                  times=cli.schedule_times(),
                  seed=FLAGS.seed, eval_batches=FLAGS.eval_batches, dataset=FLAGS.dataset,
                  split=FLAGS.split, mauve_features=FLAGS.mauve_features, progress=True)


if __name__ == "__main__":
  define_flags()
  app.run(cli.json_command(_evaluate_flags, write_output=True), flags_parser=cli.parse_flags)
