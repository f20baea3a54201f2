"""Released models in and out (`python -m dlm.convert`): tiny random checkpoints in the exact
Hugging Face layouts of LLaDA, Dream, GPT-2 and MDLM (tests/data/hf/, written with their
golden outputs by tests/data/make_hf_golden.py from the official modeling code) converted to
workdirs whose logits, special tokens, tokenization and chat rendering equal the reference;
dlm -> HF -> dlm round trips; a GPT-2 judge; sampling with sharded parameters; and every bad
input as one error line through the entry point."""

import concurrent.futures
import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from entry_points import assert_one_error  # tests/

import dlm
from dlm import config as config_lib
from dlm import convert, evaluate, sharding
from dlm.data import chat
from dlm.samplers import text as sample_text
from dlm.train import loop, pretrained

ROOT = pathlib.Path(__file__).resolve().parents[1]
HF = ROOT / "tests/data/hf"
ARCHS = ("llada", "dream", "gpt2", "mdlm")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  root = tmp_path_factory.mktemp("converted")
  return {arch: (convert.from_hf(str(HF / arch), str(root / arch)), str(root / arch))
          for arch in ARCHS}


def _golden(arch):
  return np.load(HF / arch / "golden.npz"), json.loads((HF / arch / "golden.json").read_text())


def _flat(run):
  return {k: np.asarray(v) for k, v in pretrained.flat(nnx.to_pure_dict(
      nnx.state(run.model))).items()}


@pytest.mark.parametrize("arch", ARCHS)
def test_logits_equal_the_reference_implementation(converted, arch):
  report, workdir = converted[arch]
  run = dlm.load(workdir)
  golden, meta = _golden(arch)
  tokens = jnp.asarray(golden["tokens"])
  assert report["rows"] == golden["logits"].shape[-1]
  if arch == "gpt2":
    assert run.family == "autoregressive"
    ours = run.model.denoise(tokens)
    np.testing.assert_allclose(ours, golden["logits"], atol=1e-4, rtol=0)
    return
  assert run.family == "masked"
  t = jnp.full(tokens.shape, 0.5)  # ignored by LLaDA and Dream, and by MDLM's released model
  ours = run.model.denoise(tokens, t)
  reference = golden["logits_sigma0" if arch == "mdlm" else "logits"]
  if arch == "dream":  # Dream's output i predicts token i + 1: dlm realigns it
    reference = np.concatenate([reference[:, :1], reference[:, :-1]], axis=1)
  np.testing.assert_allclose(ours, reference, atol=1e-4, rtol=0)
  if arch == "mdlm":  # the time path of an MDLM trained with time conditioning
    net = run.model.net
    net.cfg = dataclasses.replace(net.cfg, time_input="sigma_loglinear")
    sigma = golden["sigma"][:, None] * np.ones(tokens.shape)
    t = (1 - np.exp(-sigma)) / (1 - net.cfg.sigma_eps)  # sigma = -log(1 - (1 - eps) t)
    np.testing.assert_allclose(net(tokens, jnp.asarray(t, jnp.float32)), golden["logits"],
                               atol=1e-4, rtol=0)
    assert np.abs(golden["logits"] - golden["logits_sigma0"]).max() > 0.1


@pytest.mark.parametrize("arch", ARCHS)
def test_special_tokens_tokenization_and_chat_template(converted, arch):
  run = dlm.load(converted[arch][1])
  tok = run.tokenizer
  _, meta = _golden(arch)
  special = meta["special"]
  assert tok.eos_id == special["eos"] and tok.bos_id == special["bos"]
  if arch != "gpt2":
    assert tok.mask_id == special["mask"]
    assert run.config.model.vocab_size >= tok.vocab_size == meta["tokenizer_len"]
  assert tok.encode(meta["text"]).tolist() == meta["ids"]
  stops = {"llada": [special.get("eot")], "dream": [special.get("im_end")]}.get(arch, [])
  assert list(tok.stop_ids) == stops
  template = run.config.data.tokenizer.chat_template
  if "chat" not in meta:
    assert not template
    return
  messages = meta.get("chat_messages") or chat.messages_of("Say hi.", "You are terse.")
  names = {f"{r}_token": tok.token(getattr(tok, f"{r}_id")) for r in ("bos", "eos", "pad")}
  assert chat.render(template, messages, names) == meta["chat"]
  ids = sample_text.chat_prompt(tok, template, "Say hi.", "You are terse.")
  assert ids.tolist() == meta["chat_ids"]


def test_dream_without_a_tokenizer_json_uses_its_vocab_and_merges(tmp_path):
  # Dream's releases ship vocab.json + merges.txt (a slow tokenizer), not a tokenizer.json.
  shutil.copytree(HF / "dream", tmp_path / "dream")
  (tmp_path / "dream/tokenizer.json").unlink()
  report = convert.from_hf(str(tmp_path / "dream"), str(tmp_path / "w"))
  run = dlm.load(str(tmp_path / "w"))
  _, meta = _golden("dream")
  assert report["mask_id"] == meta["special"]["mask"]
  assert run.tokenizer.vocab_size == meta["tokenizer_len"]
  assert run.tokenizer.encode(meta["text"]).tolist() == meta["ids"]
  ids = sample_text.chat_prompt(run.tokenizer, run.config.data.tokenizer.chat_template,
                                "Say hi.", "You are terse.")
  assert ids.tolist() == meta["chat_ids"]


@pytest.mark.parametrize("arch", ("llada", "gpt2"))
def test_round_trip_through_the_hf_layout(converted, arch, tmp_path):
  _, workdir = converted[arch]
  out = tmp_path / "hf"
  convert.to_hf(workdir, str(out), arch, shard_bytes=200_000)
  assert (out / "model.safetensors.index.json").exists()  # written as shards with an index
  original = {}
  for f in (HF / arch).glob("*.safetensors"):
    original.update(load_file(f))
  written = {}
  for f in out.glob("*.safetensors"):
    written.update(load_file(f))
  ignored = convert.ARCHS[arch].ignored
  assert set(written) == {k for k in original if not ignored(k)}
  for name, value in written.items():  # the released layout, bit for bit
    np.testing.assert_array_equal(value, original[name])
  again = convert.from_hf(str(out), str(tmp_path / "again"))
  assert again["arch"] == arch
  first, second = dlm.load(workdir), dlm.load(str(tmp_path / "again"))
  a, b = _flat(first), _flat(second)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  tokens = jnp.asarray(_golden(arch)[0]["tokens"])
  np.testing.assert_array_equal(first.model.net(tokens), second.model.net(tokens))
  assert second.tokenizer.fingerprint == first.tokenizer.fingerprint
  assert second.config.data.tokenizer.chat_template == first.config.data.tokenizer.chat_template


def test_a_converted_gpt2_judges_generated_text(converted):
  run = dlm.load(converted["gpt2"][1])
  golden, _ = _golden("gpt2")
  tokens, logits = golden["tokens"], golden["logits"].astype(np.float64)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  nll = -np.take_along_axis(logp[:, :-1], tokens[:, 1:, None], -1)
  result = evaluate.generative_perplexity(run.model, tokens.tolist())
  assert result["scored_tokens"] == nll.size
  assert result["gen_perplexity"] == pytest.approx(float(np.exp(nll.mean())), rel=1e-4)
  longer = [list(tokens[0]) * 5]  # 80 tokens: cut to the judge's 64 positions
  assert evaluate.generative_perplexity(run.model, longer)["judge_truncated_samples"] == 1


def test_sampling_with_sharded_parameters(converted):
  workdir = converted["llada"][1]
  prompt, options = "def f(x):", dict(sampler="low_confidence", length=40, steps=10,
                                      block_length=8, blocks_from="canvas", temperature=0.0)
  replicated = dlm.load(workdir)
  mesh = sharding.make_mesh((1, 4, 2))
  sharded = dlm.load(workdir, mesh=mesh)
  embed = sharded.model.net.embed[...]
  assert embed.addressable_shards[0].data.size == embed.size // 8  # no device holds it all
  estimate = sample_text.memory_estimate(sharded.model, mesh, 2, 40, sharded.tokenizer.vocab_size)
  assert estimate["parameters_per_device_gib"] < estimate["parameters_gib"] / 4
  tokens = jnp.asarray(np.tile(_golden("llada")[0]["tokens"], (2, 1)))  # batch over fsdp=4
  expected = replicated.model.denoise(tokens, None)
  with jax.set_mesh(mesh):
    np.testing.assert_allclose(sharded.model.denoise(tokens, None), expected, atol=1e-5)
  b = dlm.sample(sharded, [prompt, prompt + " return"], cache="dual", **options)
  assert all(sharded.tokenizer.mask_id not in r["full_tokens"] for r in b)  # all filled
  chats = dlm.sample(sharded, ["Say hi."], chat=True, system="You are terse.",
                     **{**options, "length": 64, "steps": 16})
  given = np.asarray(chats[0]["given"])
  assert np.asarray(chats[0]["full_tokens"])[given].tolist() == _golden("llada")[1]["chat_ids"]


def test_fine_tuning_a_converted_model_with_adapters(converted, quickstart, tmp_path):
  base = converted["llada"][1]
  config = config_lib.from_file(
      f"{ROOT}/configs/finetune.py:{base}",
      **{"data.data_dir": quickstart.data.data_dir, "train.batch_size": 8, "train.steps": 2,
         "train.warmup_steps": 1, "train.lr": 1e-2, "train.eval_every": 2, "data.seq_len": 32,
         "train.checkpoint_every": 2, "train.eval_batches": 1, "train.progress": False,
         "train.async_checkpoint": False, "model.lora_rank": 4,
         "train.freeze": "^(?!.*lora_)"})
  assert config.train.init_from == base and config.data.tokenizer.special_tokens.mask
  loop.train(config, str(tmp_path / "sft"))
  tuned = _flat(dlm.load(str(tmp_path / "sft"), params="params"))
  original = _flat(dlm.load(base))
  moved = [k for k in tuned if "lora_b" in k and np.abs(tuned[k]).max() > 0]
  assert moved  # the adapters trained
  for k, v in original.items():  # everything else is the converted model, unchanged
    np.testing.assert_array_equal(tuned[k], v)


def _run(args, devices: int = 1):
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}" if devices > 1 else ""}
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300)


def _broken_copies(tmp_path) -> dict:
  """Model directories with one thing wrong each."""
  cases = {}

  def copy(name):
    target = tmp_path / name
    shutil.copytree(HF / "llada", target)
    return target

  d = copy("no_config")
  (d / "config.json").unlink()
  cases["no_config"] = (d, [], "has no config.json")
  d = copy("unknown_type")
  hf = json.loads((d / "config.json").read_text())
  (d / "config.json").write_text(json.dumps({**hf, "model_type": "mamba"}))
  cases["unknown_type"] = (d, [], "unknown model_type 'mamba'")
  cases["unknown_arch"] = (HF / "llada", ["--arch=t5"], "unknown --arch 't5'")
  cases["wrong_arch"] = (HF / "llada", ["--arch=dream"], "model_type 'llada'")
  d = copy("missing_shard")
  (d / "model-00002-of-00002.safetensors").unlink()
  cases["missing_shard"] = (d, [], "lacks model-00002-of-00002.safetensors")
  d = copy("wrong_shape")
  shard = d / "model-00001-of-00002.safetensors"
  tensors = load_file(shard)
  name = sorted(tensors)[0]
  tensors[name] = tensors[name][..., :-1].copy()
  save_file(tensors, shard)
  cases["wrong_shape"] = (d, [], f"tensor {name} has shape")
  d = copy("extra_tensor")
  shard = d / "model-00001-of-00002.safetensors"
  tensors = load_file(shard)
  tensors["model.transformer.blocks.0.q_norm.weight"] = np.ones(64, np.float32)
  save_file(tensors, shard)
  cases["extra_tensor"] = (d, [], "blocks.0.q_norm.weight of")
  d = copy("big_tokenizer")
  hf = json.loads((d / "config.json").read_text())
  (d / "config.json").write_text(json.dumps({**hf, "embedding_size": 310, "vocab_size": 310}))
  cases["big_tokenizer"] = (d, [], "the tokenizer has 316 tokens but the embedding has 310")
  return cases


def test_bad_input_is_one_error_line_before_anything_is_written(converted, tmp_path):
  cases = _broken_copies(tmp_path)
  jobs = {name: ["-m", "dlm.convert", f"--from_hf={d}", f"--workdir={tmp_path}/w_{name}",
                 *extra] for name, (d, extra, _) in cases.items()}
  jobs["to_hf_of_a_masked_model_as_gpt2"] = [
      "-m", "dlm.convert", f"--to_hf={tmp_path}/out", "--arch=gpt2",
      f"--workdir={converted['llada'][1]}"]
  jobs["no_direction"] = ["-m", "dlm.convert", f"--workdir={tmp_path}/w"]
  jobs["chat_without_template"] = ["sample.py", f"--workdir={converted['gpt2'][1]}", "--chat",
                                   "--prompt=hi", "--num_samples=1"]
  jobs["training_a_converted_workdir"] = [
      "train.py", "--config=configs/quickstart.py:bpe", f"--workdir={converted['llada'][1]}"]
  jobs["bad_stop_tokens"] = ["train.py", "--config=configs/quickstart.py:bpe",
                             f"--workdir={tmp_path}/w_bad_stop_tokens",
                             "--config.data.tokenizer.stop_tokens=5"]
  llada = converted["llada"][1]
  (tmp_path / "full").mkdir()
  (tmp_path / "full/x").write_text("x")
  jobs["to_hf_without_arch"] = ["-m", "dlm.convert", f"--to_hf={tmp_path}/out",
                                f"--workdir={llada}"]
  jobs["to_hf_into_a_full_directory"] = ["-m", "dlm.convert", f"--to_hf={tmp_path}/full",
                                         "--arch=llada", f"--workdir={llada}"]
  jobs["negative_seq_len"] = ["-m", "dlm.convert", f"--from_hf={HF / 'llada'}",
                              f"--workdir={tmp_path}/w_negative_seq_len", "--seq_len=-1"]
  jobs["missing_tokenizer"] = ["-m", "dlm.convert", f"--from_hf={HF / 'mdlm'}",
                               f"--workdir={tmp_path}/w_missing_tokenizer",
                               f"--tokenizer={tmp_path}/none.json"]
  jobs["system_without_chat"] = ["sample.py", f"--workdir={llada}", "--system=terse"]
  jobs["chat_without_prompt"] = ["sample.py", f"--workdir={llada}", "--chat"]
  jobs["bad_mesh"] = ["sample.py", f"--workdir={llada}", "--mesh=1,x,1"]
  messages = {name: message for name, (_, _, message) in cases.items()}
  messages.update(to_hf_of_a_masked_model_as_gpt2="GPT-2's layout holds autoregressive",
                  no_direction="give one of --from_hf", chat_without_template="no chat template",
                  training_a_converted_workdir="holds model parameters only",
                  bad_stop_tokens="data.tokenizer.stop_tokens must be a list",
                  system_without_chat="--system needs --chat",
                  chat_without_prompt="--chat needs --prompt", bad_mesh="--mesh='1,x,1'",
                  to_hf_without_arch="--to_hf needs --arch",
                  to_hf_into_a_full_directory="is not empty",
                  negative_seq_len="--seq_len must be >= 0",
                  missing_tokenizer="no tokenizer at")
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    done = dict(zip(jobs, pool.map(_run, jobs.values())))
  for name, proc in done.items():
    assert_one_error(proc, messages[name])
    assert not (tmp_path / f"w_{name}").exists(), name  # nothing written
  assert not (tmp_path / "out").exists()


def test_sample_py_chats_with_a_converted_instruct_model(converted):
  proc = _run(["sample.py", f"--workdir={converted['llada'][1]}", "--chat",
               "--prompt=Say hi.", "--system=You are terse.", "--num_samples=2",
               "--new_tokens=16", "--steps=8", "--block_length=8", "--mesh=1,4,2"],
              devices=8)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.count("--- sample") == 2
  assert "GiB per device on mesh" in proc.stderr


def test_new_tokens_generate_after_each_prompt(converted):
  run = dlm.load(converted["llada"][1])
  prompts = ["def", "def f(x): return x"]
  options = dict(new_tokens=8, sampler="low_confidence", block_length=4, steps=4,
                 temperature=0.0)
  out = dlm.sample(run, prompts, **options)
  lengths = [len(run.tokenizer.encode(p)) for p in prompts]
  for r, n in zip(out, lengths):
    given = np.asarray(r["given"])
    assert len(given) == max(lengths) + 8
    np.testing.assert_array_equal(np.flatnonzero(~given), np.arange(n, n + 8))
    assert (np.asarray(r["revealed_at"])[n:n + 8] // 2 == np.repeat([0, 1], 4)).all()
  # The converted model's key/value cache, refreshed at every step: the same tokens.
  cached = dlm.sample(run, prompts, cache="dual", cache_refresh=1, **options)
  assert [r["full_tokens"] for r in cached] == [r["full_tokens"] for r in out]


def test_the_converted_gpt2_decodes_with_its_cache_as_without(converted):
  run = dlm.load(converted["gpt2"][1])
  options = dict(num_samples=3, length=40, temperature=1.0, seed=2)
  cached = dlm.sample(run, "def f(x):", sampler="autoregressive", **options)
  full = dlm.sample(run, "def f(x):", sampler="autoregressive_full", **options)
  assert [r["full_tokens"] for r in cached] == [r["full_tokens"] for r in full]
  assert [r["nfe"] for r in cached] == [r["nfe"] for r in full]
