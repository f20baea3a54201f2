"""Evaluation: validation bound, generative perplexity under a judge, entropy, MAUVE, infilling,
and a judge with another tokenizer."""

import math
import os
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from entry_points import assert_one_error

from dlm import config as config_lib
from dlm import api, evaluate, features, samplers
from dlm.errors import DlmError
from dlm.models import encoders
from dlm.train import loop

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = {"model.width": 32, "model.depth": 2, "model.heads": 2, "data.seq_len": 32,
        "train.batch_size": 8, "train.steps": 2, "train.eval_every": 2,
        "train.checkpoint_every": 2, "train.eval_batches": 1, "train.progress": False,
        "train.async_checkpoint": False, "model.head_init_std": 0.0, "train.lr": 1e-9}


def _train(data_dir, path, **overrides):
  config = config_lib.from_file(str(ROOT / "configs/quickstart.py:bpe"),
                                **{"data.data_dir": data_dir, **TINY, **overrides})
  loop.train(config, str(path))
  return str(path)


@pytest.fixture(scope="module")
def runs(quickstart, tmp_path_factory):
  root = tmp_path_factory.mktemp("eval_runs")
  d = quickstart.data.data_dir
  return {"masked": _train(d, root / "masked"),
          "ar": _train(d, root / "ar", **{"model.family": "autoregressive"}),
          # A judge with another tokenizer: MiniLM's uncased WordPiece.
          "ar_other_vocab": _train(d, root / "ar2", **{
              "model.family": "autoregressive",
              "data.tokenizer.path": str(encoders.default_model_dir() / "tokenizer.json")})}


def test_known_words():
  from dlm import textmetrics  # pylint: disable=g-import-not-at-top
  assert textmetrics.words("The json_module 3x café, déjà-vu") == [
      "The", "json", "module", "x", "café", "déjà", "vu"]
  known = textmetrics.vocabulary(["the cat", "sat down"])
  assert textmetrics.known_words(["the cat sat", "zzq Cat"], known) == {"known_words": 0.6,
                                                                       "words": 5}
  assert math.isnan(textmetrics.known_words(["42 !"], known)["known_words"])


def test_sample_entropy():
  assert evaluate.sample_entropy([[1, 2, 3, 4] * 5, [7] * 9]) == pytest.approx((2.0 + 0.0) / 2)


def test_generation_scored_by_the_judge(runs):
  # lr 1e-9 keeps the zero-initialised head: the judge predicts uniformly, so the generative
  # perplexity must equal the vocabulary size, and the AR validation bound is exact log V.
  result = evaluate.evaluate(runs["masked"], judge_workdir=runs["ar"],
                             sampler=samplers.SamplerConfig(steps=8), num_samples=4,
                             infill_rows=4, infill_span=8, eval_batches=1)
  vocab = 2048
  assert result["judge"]["retokenized"] is False  # the same tokenizer: the sampled ids
  assert result["samples"]["gen_perplexity"] == pytest.approx(vocab, rel=1e-3)
  assert result["samples"]["mean_nfe"] == 8 and result["samples"]["num_samples"] == 4
  assert 0.0 <= result["infill"]["infill_accuracy"] <= 1.0
  assert result["validation"]["exact"] is False
  # Uniform samples are subword salad; real validation text is mostly words seen in training.
  samples = result["samples"]
  assert samples["vocabulary_documents"] > 0 and samples["words"] > 0
  assert samples["known_words"] < 0.7 < samples["known_words_validation"], samples
  ar = evaluate.evaluate(runs["ar"], which="params", eval_batches=1)
  assert ar["validation"]["exact"] is True
  assert ar["validation"]["bits_per_token"] == pytest.approx(math.log2(vocab), rel=1e-4)


def test_judge_with_another_tokenizer_scores_the_text_again(runs):
  # The judge (zero head: uniform) reads texts in its own tokens after its bos, so its
  # generative perplexity is exactly its vocabulary size.
  judge = api.load(runs["ar_other_vocab"], params="params")
  texts = ["def add(a, b):\n    return a + b", "The json module encodes objects."]
  ids = evaluate.judge_tokens(judge.tokenizer, texts)
  assert ids[0][0] == judge.tokenizer.bos_id
  assert ids[1][1:] == judge.tokenizer.encode(texts[1]).tolist()
  result = evaluate.generative_perplexity(judge.model, ids)
  vocab = judge.model.net.cfg.vocab_size
  assert vocab > 30000 and result["gen_perplexity"] == pytest.approx(vocab, rel=1e-3)
  assert result["scored_tokens"] == sum(len(i) - 1 for i in ids)
  with pytest.raises(DlmError, match="must be autoregressive"):
    evaluate.evaluate(runs["masked"], judge_workdir=runs["masked"])


def test_a_judge_that_cannot_encode_the_text_is_refused_before_sampling(runs):
  # The quickstart's byte-level BPE can write control characters that WordPiece drops.
  proc = subprocess.run(
      [sys.executable, "-m", "dlm.evaluate", f"--workdir={runs['masked']}",
       f"--judge_workdir={runs['ar_other_vocab']}", "--num_samples=2"],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert_one_error(proc, "cannot encode 24 character(s) the model can write")
  assert "validation" not in proc.stderr  # refused before the bound and the samples


def test_mauve_features_of_an_autoregressive_workdir_are_its_last_token_states(runs):
  run = api.load(runs["ar"], params="params")
  texts = ["def add(a, b):", "The json module encodes objects.", "x",
           "a text longer than the model's context of 32 tokens " * 4]
  got = features.last_token_states(run, texts, batch_size=3)
  assert got.shape == (4, 32)
  for text, row in zip(texts, got):
    ids = run.tokenizer.encode(text)[:32]  # no bos; cut to the context
    want = np.asarray(run.model.net.features(jnp.asarray(ids)[None]))[0, -1]
    np.testing.assert_allclose(row, want, rtol=1e-4, atol=1e-5)
  assert np.abs(got[0] - got[1]).max() > 1e-3
  # A workdir given as MAUVE's features is read this way; empty texts are dropped.
  np.testing.assert_allclose(features.featurizer(runs["ar"])(texts[:2] + [""]), got[:2],
                             rtol=1e-4, atol=1e-5)


def test_mauve_separates_distributions(quickstart):
  from dlm.data import sources

  docs = sources.open_split(quickstart.data, "validation")
  prose = [line for d in docs for line in d.split("\n\n") if len(line) > 80][:120]
  rng = np.random.default_rng(0)
  rng.shuffle(prose)
  same = features.mauve_score(prose[:60], prose[60:120])
  code = [f"x_{i} = [{i}, {i + 1}] * {i % 7}\nreturn f(x_{i})" for i in range(60)]
  different = features.mauve_score(code, prose[60:120])
  assert same > 0.5 and different < 0.2 and same > different + 0.4


def test_mauve_embeds_with_the_encoder_it_is_given(monkeypatch):
  from dlm.models import encoders

  asked = []

  class Stop(Exception):
    pass

  def load(path, **kwargs):
    del kwargs
    asked.append(str(path))
    raise Stop  # the encoder asked for is all this test checks

  monkeypatch.setattr(encoders, "load_encoder", load)
  for given, expected in (("/some/encoder", "/some/encoder"),
                          (None, str(encoders.default_model_dir()))):
    with pytest.raises(Stop):
      features.mauve_score(["a"], ["b"], features=given)
    assert asked[-1] == expected
