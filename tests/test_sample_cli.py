"""sample.py on a trained checkpoint: samples, infilling, replays, and bad input."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from entry_points import ONE_DEVICE_XLA_FLAGS  # noqa: E402  (tests/)

from dlm import config as config_lib
from dlm.train import loop
from dlm.train import restore

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = {"model.width": 32, "model.depth": 2, "model.heads": 2, "data.seq_len": 32,
        "train.batch_size": 8, "train.steps": 3, "train.eval_every": 3,
        "train.checkpoint_every": 3, "train.eval_batches": 1, "train.progress": False,
        "train.async_checkpoint": False}


@pytest.fixture(scope="module")
def workdir(quickstart, tmp_path_factory):
  path = tmp_path_factory.mktemp("sample_run")
  config = config_lib.from_file(str(ROOT / "configs/quickstart.py:bpe"),
                                **{"data.data_dir": quickstart.data.data_dir, **TINY})
  loop.train(config, str(path))
  return str(path)


def _sample(*args):
  env = {**os.environ, "XLA_FLAGS": ONE_DEVICE_XLA_FLAGS, "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, str(ROOT / "sample.py"), *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)


def test_samples_infill_and_replay(workdir, tmp_path):
  out = _sample(f"--workdir={workdir}", "--num_samples=4", "--steps=8",
                f"--output={tmp_path / 's.jsonl'}", f"--html={tmp_path / 'r.html'}",
                "--show_steps")
  assert out.returncode == 0, out.stderr
  assert out.stdout.count("--- sample ") == 4
  assert "step 8/8" in out.stdout or "step " in out.stdout
  rows = [json.loads(l) for l in open(tmp_path / "s.jsonl")]
  assert len(rows) == 4
  assert rows[0]["settings"]["name"] == "ancestral" and rows[0]["settings"]["steps"] == 8
  assert "DATA" in (tmp_path / "r.html").read_text()

  template = "def add(a, b):[MASK*6]return a + b"
  out = _sample(f"--workdir={workdir}", "--num_samples=2", "--steps=6", "--sampler=low_confidence",
                f"--infill={template}", f"--output={tmp_path / 'i.jsonl'}")
  assert out.returncode == 0, out.stderr
  for row in (json.loads(l) for l in open(tmp_path / "i.jsonl")):
    given = np.array(row["given"])
    tokens = np.array(row["full_tokens"])
    assert (~given).sum() == 6
    revealed = np.array(row["revealed_at"])
    assert (revealed[given] == -1).all() and (revealed[~given] >= 0).all()
  from dlm.train import checkpoint as ckpt_lib
  ckpts = ckpt_lib.Checkpoints(workdir, read_only=True)
  tok = ckpts.read_tokenizer(3, ckpts.read_config(3))
  prefix = tok.encode("def add(a, b):").tolist()
  assert tokens[:len(prefix)].tolist() == prefix


@pytest.mark.parametrize("args, message", [
    (["--prompt=" + "word " * 100], "the prompt has"),
    (["--sampler=nope"], "unknown sampler 'nope'"),
    (["--infill=no spans here"], "no [MASK]"),
    (["--threshold=1.5", "--sampler=low_confidence"], "threshold must be in (0, 1]"),
    (["--threshold=0.9"], "not with sampler 'ancestral'"),
    (["--cache=dual"], "not sampler 'ancestral'"),
    (["--sampler=low_confidence", "--prompt=Return the", "--block_length=8", "--length=32"],
     "does not divide the generation length"),
])
def test_bad_sampling_input(workdir, args, message):
  out = _sample(f"--workdir={workdir}", "--num_samples=1", "--steps=4", *args)
  lines = [l for l in out.stderr.splitlines() if l.strip()]
  assert out.returncode == 2 and len(lines) == 1 and message in lines[0], out.stderr


def test_workdir_without_checkpoint(tmp_path):
  out = _sample(f"--workdir={tmp_path}")
  assert out.returncode == 2 and "no checkpoint in" in out.stderr


def test_sampling_sharded_over_devices_matches_one_device(workdir):
  import jax

  from dlm import samplers, sharding

  results = []
  for mesh in (sharding.make_mesh((1, 1, 1), jax.devices()[:1]), sharding.make_mesh((8, 1, 1))):
    _, tok, model, _ = restore.load(workdir, mesh=mesh)
    canvas = samplers.blank_canvas(8, 32, tok.mask_id)
    bs = sharding.named_sharding(mesh, ("batch", "length"), (("batch", "data"),))
    canvas = samplers.Canvas(jax.device_put(canvas.tokens, bs), jax.device_put(canvas.given, bs))
    with jax.set_mesh(mesh):
      out = samplers.generate(model, samplers.SamplerConfig(name="low_confidence", steps=8),
                              jax.random.PRNGKey(0), canvas)
    assert out.tokens.sharding.mesh.shape["data"] == mesh.shape["data"]
    results.append(np.asarray(out.tokens))
  np.testing.assert_array_equal(results[0], results[1])


def test_samples_too_many_for_memory_are_batched(workdir, monkeypatch):
  """With room for 3 rows per batch, 7 samples come in 3 batches (padded to whole shards),
  exactly 7 results, each a sample of its own."""
  from dlm import samplers
  from dlm.samplers import text

  _, tok, model, _ = restore.load(workdir, mesh=text.data_mesh(1))
  per_row = 4 * 32 * (8 * tok.vocab_size + 32 * 32) + 4 * 2 * 2 * 32 * 32
  monkeypatch.setattr(text, "_free_bytes", lambda mesh: 3 * per_row)
  assert text.auto_batch_size(model, 7, 32, tok.vocab_size, text.data_mesh(1)) == 3
  calls = []
  generate = samplers.generate
  monkeypatch.setattr(samplers, "generate",
                      lambda *a, **k: calls.append(a[3].tokens.shape) or generate(*a, **k))
  out = text.sample(model, tok, samplers.SamplerConfig(steps=4), num_samples=7, length=32,
                    mesh=text.data_mesh(1))
  assert len(out) == 7 and calls == [(3, 32)] * 3
  assert len({tuple(r["full_tokens"]) for r in out}) == 7


def test_the_python_api_prints_nothing_but_what_the_caller_prints(workdir):
  """README's example: dlm.load + dlm.generate, in a fresh interpreter."""
  script = ("import dlm\n"
            f"run = dlm.load({workdir!r})\n"
            "for text in dlm.generate(run, ['Return the', 'The json'], sampler='low_confidence',\n"
            "                         steps=4, temperature=0.0):\n"
            "  print(repr(text))\n")
  env = {**os.environ, "XLA_FLAGS": ONE_DEVICE_XLA_FLAGS, "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 0 and out.stderr == "", out.stderr
  lines = out.stdout.splitlines()
  assert len(lines) == 2 and lines[0].startswith("'Return the") and lines[1].startswith("'The json")
