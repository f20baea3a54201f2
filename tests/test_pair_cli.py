"""The summarisation task end to end: train a NeoDiff pair model, optimise its schedule, sample
with `sample.py --source --schedule`, evaluate BLEU (`dlm.evaluate --num_pairs`)."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from entry_points import ONE_DEVICE_XLA_FLAGS  # noqa: E402  (tests/)

import jax
import jax.numpy as jnp

from dlm import config as config_lib
from dlm import api, evaluate, neodiff_schedule, samplers
from dlm.processes import nonsim
from dlm.samplers import text
from dlm.train import loop
from dlm.train import restore

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = {"model.width": 32, "model.depth": 2, "model.heads": 2, "model.cond_width": 16,
        "data.seq_len": 48, "data.source_len": 32, "neodiff.embed_dim": 16,
        "train.batch_size": 8, "train.steps": 4, "train.eval_every": 4,
        "train.checkpoint_every": 4, "train.eval_batches": 1, "train.progress": False,
        "train.async_checkpoint": False}
SOURCE = "def add(a, b):\n    return a + b\n"


@pytest.fixture(scope="module")
def workdir(data_dir, tmp_path_factory):
  path = tmp_path_factory.mktemp("pair_run")
  config = config_lib.from_file(str(ROOT / "configs/summarize.py:neodiff"),
                                **{"data.data_dir": data_dir, **TINY})
  loop.train(config, str(path))
  return str(path)


def _run(script, *args):
  env = {**os.environ, "XLA_FLAGS": ONE_DEVICE_XLA_FLAGS, "JAX_PLATFORMS": "cpu"}
  cmd = [sys.executable, str(ROOT / script), *args]
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_schedule_search_sample_and_evaluate(workdir, tmp_path):
  result = neodiff_schedule.optimise(workdir, 4, num_pairs=8, init_points=2, iterations=2,
                                     output=str(tmp_path / "schedule.json"))
  times = nonsim.load_schedule(result["output"])
  assert len(times) == 5 and times[0] == 1.0 and times[-1] == 0.0
  assert result["optimised_bleu"] >= result["uniform_bleu"]  # the uniform grid is probed

  out = _run("sample.py", f"--workdir={workdir}", "--num_samples=2", "--steps=4",
             f"--source={SOURCE}", f"--schedule={result['output']}",
             f"--output={tmp_path / 's.jsonl'}")
  assert out.returncode == 0, out.stderr
  rows = [json.loads(l) for l in open(tmp_path / "s.jsonl")]
  assert len(rows) == 2 and rows[0]["settings"]["name"] == "neodiff"
  given = np.array(rows[0]["given"])
  assert given[0] and given.sum() < len(given)  # the [bos] source [eos] prefix is given
  assert rows[0]["nfe"] == 4

  bad = _run("sample.py", f"--workdir={workdir}", "--steps=5",
             f"--schedule={result['output']}")
  assert bad.returncode == 2 and "does not fit 5 steps" in bad.stderr

  res = evaluate.evaluate(workdir, sampler=samplers.SamplerConfig(name="", steps=4), num_pairs=4,
                          eval_batches=1)
  assert res["pairs"]["pairs"] == 4 and 0.0 <= res["pairs"]["bleu"] <= 100.0
  assert res["pairs"]["sampler"] == "neodiff"
  assert res["validation"]["bound"] is False and np.isfinite(res["validation"]["loss"])


def test_pair_references_are_scored_given_their_sources(data_dir, tmp_path):
  config = config_lib.from_file(str(ROOT / "configs/summarize.py:autoregressive"), **{
      "data.data_dir": data_dir, **{k: v for k, v in TINY.items() if "neodiff" not in k}})
  loop.train(config, str(tmp_path))
  res = evaluate.evaluate(str(tmp_path), sampler=samplers.SamplerConfig(name="", steps=4),
                          num_pairs=3, eval_batches=1)
  run = api.load(str(tmp_path))
  tok = run.tokenizer
  total = count = 0.0
  for source, target in evaluate.validation_pairs(run.config, 3):
    prefix = [tok.bos_id, *tok.encode(source)[:32].tolist(), tok.eos_id]  # source_len 32
    ids = [*tok.encode(target)[:48 - len(prefix) - 1].tolist(), tok.eos_id]
    log_p = jax.nn.log_softmax(run.model.denoise(jnp.asarray([prefix + ids])), axis=-1)[0]
    total += sum(float(log_p[len(prefix) - 1 + i, y]) for i, y in enumerate(ids))
    count += len(ids)
  pairs = res["pairs"]
  assert pairs["exact"] is True and pairs["reference_tokens"] == count
  assert pairs["reference_bits_per_token"] == pytest.approx(-total / count / np.log(2),
                                                            rel=1e-5)


def test_source_on_an_unconditional_model_is_a_clear_error(quickstart, tmp_path):
  config = config_lib.from_file(str(ROOT / "configs/continuous.py"), **{
      "data.data_dir": quickstart.data.data_dir, **{k: v for k, v in TINY.items()
                                                   if not k.startswith(("neodiff", "data.s"))},
      "continuous.embed_dim": 16, "data.seq_len": 32})
  loop.train(config, str(tmp_path))
  out = _run("sample.py", f"--workdir={tmp_path}", "--num_samples=2", "--steps=4",
             f"--source={SOURCE}")
  assert out.returncode == 2 and "needs a model trained on pairs" in out.stderr
  out = _run("sample.py", f"--workdir={tmp_path}", "--num_samples=2", "--steps=4",
             "--sampler=low_confidence")
  assert out.returncode == 2 and "does not sample continuous models" in out.stderr
  mesh = text.data_mesh(2)
  _, tokenizer, model, _ = restore.load(str(tmp_path), mesh=mesh)
  rows = text.sample(model, tokenizer, samplers.SamplerConfig(name="ddim", steps=4),
                     num_samples=2, length=32, prompt="Return the", mesh=mesh)
  assert len(rows) == 2 and all(r["text"].startswith("Return the") for r in rows)
