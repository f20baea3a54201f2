"""The lm-evaluation-harness model `dlm-jax` (dlm/lm_eval.py) on local tasks, offline."""

import concurrent.futures
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from dlm import config as config_lib
from entry_points import ONE_DEVICE_XLA_FLAGS, assert_one_error

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = {"model.width": 32, "model.depth": 2, "model.heads": 2, "data.seq_len": 32}
MC = [{"question": "1 + 1 =", "choices": [" 2", " 3", " 11"], "answer": 0},
      {"question": "The json module", "choices": [" parses", " flies"], "answer": 0},
      {"question": "def f(x):", "choices": [" return x", " banana"], "answer": 0}]
GEN = [{"question": "Return the", "answer": "value"}, {"question": "import", "answer": "os"}]


@pytest.fixture(scope="module")
def workdirs(quickstart, tokenizer, tmp_path_factory):
  """Parameters-only workdirs of untrained tiny models (random weights), one per family."""
  from flax import nnx

  from dlm import models
  from dlm.train import checkpoint

  out = {}
  for family in ("masked", "autoregressive"):
    path = str(tmp_path_factory.mktemp(family))
    config = config_lib.from_file(str(ROOT / "configs/quickstart.py:bpe"), **{
        "data.data_dir": quickstart.data.data_dir, **TINY, "model.family": family})
    model = models.build(config, tokenizer, nnx.Rngs(0))
    ckpts = checkpoint.Checkpoints(path, keep=1, async_save=False)
    ckpts.save_params(0, nnx.to_pure_dict(nnx.state(model)), config, tokenizer)
    ckpts.close()
    out[family] = path
  return out


def _task_dir(tmp_path) -> str:
  """Two local tasks (a YAML and a JSONL each): multiple choice and generation."""
  for name, rows in (("mc", MC), ("gen", GEN)):
    with open(tmp_path / f"{name}.jsonl", "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in rows)
  common = ('dataset_path: json\ntest_split: test\ndoc_to_text: "{{question}}"\n'
            'doc_to_target: "{{answer}}"\n')
  (tmp_path / "mc.yaml").write_text(
      f"task: dlm_toy_mc\n{common}dataset_kwargs:\n  data_files:\n    test: {tmp_path}/mc.jsonl\n"
      "output_type: multiple_choice\ndoc_to_choice: \"{{choices}}\"\n"
      "metric_list:\n  - metric: acc\n")
  (tmp_path / "gen.yaml").write_text(
      f"task: dlm_toy_gen\n{common}dataset_kwargs:\n  data_files:\n    test: {tmp_path}/gen.jsonl\n"
      "output_type: generate_until\ngeneration_kwargs:\n  until: [\"\\n\"]\n  max_gen_toks: 8\n"
      "metric_list:\n  - metric: exact_match\n")
  return str(tmp_path)


def test_local_tasks_run_through_the_harness(workdirs, tmp_path, monkeypatch):
  import lm_eval
  from lm_eval.tasks import TaskManager

  import dlm.lm_eval  # noqa: F401  (registers dlm-jax)

  monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
  manager = TaskManager(include_path=_task_dir(tmp_path))
  out = lm_eval.simple_evaluate(
      model="dlm-jax", model_args=(f"workdir={workdirs['masked']},mc_samples=16,mc_batch=8,"
                                   "sampler=low_confidence,steps=8,temperature=0"),
      tasks=["dlm_toy_mc", "dlm_toy_gen"], task_manager=manager)
  results = out["results"]
  assert 0.0 <= results["dlm_toy_mc"]["acc,none"] <= 1.0
  assert 0.0 <= results["dlm_toy_gen"]["exact_match,none"] <= 1.0
  responses = out["samples"]["dlm_toy_mc"]
  assert len(responses) == len(MC)
  assert all(len(r["resps"]) == len(d["choices"]) for r, d in zip(responses, MC))


def test_the_adapter_scores_autoregressive_continuations_exactly(workdirs):
  from lm_eval.api.instance import Instance

  import dlm
  from dlm.lm_eval import DlmLM

  lm = DlmLM(workdir=workdirs["autoregressive"], params="params")
  pairs = [("The json module", " parses"), ("def f(x): ", "return x")]
  requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
  got = lm.loglikelihood(requests, disable_tqdm=True)
  run = dlm.load(workdirs["autoregressive"], params="params")
  tok = run.tokenizer
  for (context, continuation), (value, _) in zip(pairs, got):
    head = context.rstrip()
    ids = [tok.eos_id, *tok.encode(head + context[len(head):] + continuation).tolist()]
    n = 1 + len(tok.encode(head))
    log_p = jax.nn.log_softmax(run.model.denoise(np.asarray([ids])), axis=-1)[0]
    expected = sum(float(log_p[i - 1, ids[i]]) for i in range(n, len(ids)))
    assert value == pytest.approx(expected, abs=1e-4)


def test_bad_model_arguments_are_one_error_line(workdirs, tmp_path):
  env = {**os.environ, "XLA_FLAGS": ONE_DEVICE_XLA_FLAGS, "JAX_PLATFORMS": "cpu",
         "HF_DATASETS_OFFLINE": "1"}
  tasks = _task_dir(tmp_path)
  lm_eval = [sys.executable, "-m", "dlm.lm_eval", "--tasks", "dlm_toy_mc", "--include_path",
             tasks, "--model_args"]
  cases = {
      (*lm_eval, f"workdir={workdirs['masked']},nope=1"):
          "unknown dlm-jax model argument(s) ['nope']",
      (*lm_eval, f"workdir={tmp_path}"): "no checkpoint in",
      (*lm_eval, f"workdir={workdirs['masked']},new_tokens=0"): "new_tokens must be positive",
      (sys.executable, "-m", "dlm.evaluate", f"--workdir={workdirs['masked']}",
       "--params=params", "--dataset=nope:x"): "unknown dataset source 'nope'",
  }

  def run(command):
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)

  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    for proc, message in zip(pool.map(run, cases), cases.values()):
      assert_one_error(proc, message)


def test_zero_shot_perplexity_is_the_bound_on_another_sources_tokens(workdirs, tmp_path):
  from dlm import api, evaluate
  from dlm.samplers import text as sample_text

  paragraphs = [p for p in open(json.__file__, encoding="utf-8").read().split("\n\n") if p]
  for split, part in (("train", paragraphs[:10]), ("validation", paragraphs[10:30])):
    (tmp_path / f"corpus_{split}.txt").write_text("\n\n".join(part))
  source = f"text:{tmp_path}/corpus_{{split}}.txt"
  out = evaluate.evaluate(workdirs["masked"], which="params", dataset=source)
  own = evaluate.evaluate(workdirs["masked"], which="params")
  assert out["dataset"] == {"dataset": source, "split": "validation"}
  # The existing way: the bound of a run whose own evaluation split is that source's.
  run = api.load(workdirs["masked"], params="params")
  config = run.config.copy_and_resolve_references()
  with config.unlocked():
    config.data.dataset = source
  expected = evaluate.validation_bound(config, run.tokenizer, run.model,
                                       sample_text.data_mesh(config.train.batch_size))
  for key in ("bits_per_token", "tokens", "real_tokens"):
    assert out["validation"][key] == expected[key], key
  assert out["validation"]["tokens"] != own["validation"]["tokens"]
