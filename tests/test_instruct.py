"""Instruction tuning (configs/instruct.py): the instruct pairs, eos and rainbow padding of the
response, the never-noised prompt, LLaDA's per-response loss, LoRA adapters over a pretrained
workdir, and decoding that stops at eos and at every pad token."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dlm import config as config_lib
from dlm import models
from dlm.data import pipeline, pyextract
from dlm.data.tokenizer import Tokenizer
from dlm.errors import DlmError
from dlm.samplers import text as sample_text
from dlm.train import loop
from dlm.train import restore, pretrained

ROOT = pathlib.Path(__file__).resolve().parents[1]

MODULE = '''\
def dumps(obj, *, indent=None):
    """Serialize obj to a JSON formatted str.

    If indent is a non-negative integer, array elements and
    object members are pretty-printed.
    """


def short(x):
    """Return x unchanged."""


class C:
    def method(self, a=1):
        """Compute the thing, e.g. the area. It uses a and
        nothing else at all."""
'''


@pytest.fixture(scope="module")
def tok():
  texts = ["def add(a, b):\n    return a + b\n", "Add two numbers and return the sum.",
           "the quick brown fox jumps over the lazy dog"] * 20
  return Tokenizer.train_bpe(texts, vocab_size=300)


def test_instruction_pairs_split_the_docstring_after_its_first_sentence():
  found = {s.qualname: s for s in pyextract.instructions(MODULE, "m")}
  assert list(found) == ["m.dumps", "m.C.method"]  # `short` has no rest
  assert found["m.dumps"].prompt == ("m.dumps(obj, *, indent=None)\n"
                                     "Serialize obj to a JSON formatted str.")
  assert found["m.dumps"].response == ("If indent is a non-negative integer, array elements "
                                       "and\nobject members are pretty-printed.")
  assert found["m.C.method"].prompt.endswith("\nCompute the thing, e.g. the area.")
  assert found["m.C.method"].response == "It uses a and\nnothing else at all."
  assert pyextract.instructions(MODULE, "m", max_response_chars=40)[0].qualname == "m.C.method"


@pytest.mark.parametrize("padding", ["eos", "rainbow"])
def test_collator_padding_layout(tok, padding):
  source, target = "def add(a, b):", "Add two numbers and return the sum."
  pairs = [(source, target), (source, target + " " + target)]
  batch = next(iter(pipeline.dataset(pairs, tok, seq_len=96, batch_size=2, pairs=True,
                                     source_len=12, shuffle=False, num_epochs=1,
                                     response_padding=padding)))
  k = len(tok.reserved_pad_ids)
  assert k == 7 and len(set(tok.reserved_pad_ids) | {tok.eos_id, tok.pad_id}) == 9
  for i, (s, t) in enumerate(pairs):
    tokens, given = batch["tokens"][i], batch["given"][i]
    prefix = [tok.bos_id, *tok.encode(s), tok.eos_id]
    n, m = len(prefix), len(tok.encode(t))
    np.testing.assert_array_equal(given, np.arange(96) < n)
    np.testing.assert_array_equal(tokens[:n], prefix)
    np.testing.assert_array_equal(tokens[n:n + m], tok.encode(t))
    assert tokens[n + m] == tok.eos_id  # exactly one closing eos, then the padding
    tail = tokens[n + m + 1:]
    if padding == "eos":
      expected = [tok.eos_id] * len(tail)
    else:
      expected = [tok.reserved_pad_ids[j % k] for j in range(len(tail))]
      assert len(tail) > k or i == 1  # the cycle wraps round in the first row
    np.testing.assert_array_equal(tail, expected)
    assert (batch["segment_ids"][i] == 1).all()  # every padding position is scored


def test_rainbow_keeps_one_closing_eos_when_the_response_is_cut(tok):
  target = " ".join(["jumps over the lazy dog"] * 40)
  row = pipeline.pair_row(tok, tok.encode("def f():"), tok.encode(target), seq_len=32,
                          source_len=8, padding="rainbow")
  n = int(row["given"].sum())
  assert row["tokens"][-1] == tok.eos_id and tok.eos_id not in row["tokens"][n:-1]
  assert not set(tok.reserved_pad_ids) & set(row["tokens"].tolist())


def test_bad_padding_is_a_dlm_error(tok, quickstart):
  with pytest.raises(DlmError, match="response_padding"):
    pipeline.pair_row(tok, tok.encode("a"), tok.encode("b"), seq_len=16, source_len=4,
                      padding="zebra")
  with pytest.raises(DlmError, match="response_padding"):
    config_lib.from_file(str(ROOT / "configs/instruct.py"), **{"data.response_padding": "x"})
  with pytest.raises(DlmError, match="num_reserved_pads"):
    config_lib.from_file(str(ROOT / "configs/instruct.py:rainbow"),
                         **{"data.tokenizer.num_reserved_pads": 0})
  no_pads = Tokenizer(tok.hf, num_reserved_pads=0)
  with pytest.raises(DlmError, match="reserved pad"):
    pipeline.pair_row(no_pads, tok.encode("a"), tok.encode("b"), seq_len=16, source_len=4,
                      padding="rainbow")
  for key, value, match in (("model.lora_rank", -1, "lora_rank"),
                            ("diffusion.loss_norm", "row", "loss_norm")):
    with pytest.raises(DlmError, match=match):
      config_lib.from_file(str(ROOT / "configs/instruct.py"), **{key: value})


def _model(tok, **overrides):
  config = config_lib.from_file(str(ROOT / "configs/instruct.py:rainbow"), **{
      "model.width": 32, "model.depth": 2, **overrides})
  return config, models.build(config, tok, nnx.Rngs(0))


def test_prompt_is_never_masked_and_loss_is_per_response(tok):
  pairs = [("def add(a, b):", "Add two numbers."), ("def f(x, y, z):", "Return the sum.")]
  batch = next(iter(pipeline.dataset(pairs, tok, seq_len=40, batch_size=2, pairs=True,
                                     source_len=16, shuffle=False, num_epochs=1,
                                     response_padding="rainbow")))
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  _, model = _model(tok)
  given = batch["given"]
  lengths = (~given).sum(axis=-1)
  assert lengths[0] != lengths[1]
  corrupt = jax.jit(lambda b, rng: model.corrupt(b, rng))
  for seed in range(8):
    noisy = corrupt(batch, jax.random.PRNGKey(seed))
    np.testing.assert_array_equal(noisy["z"][given], batch["tokens"][given])
    assert (noisy["t"][given] == 0).all() and not noisy["scored"][given].any()
    # Late times mask (nearly) the whole response: the prompt still never is.
    assert ((noisy["z"] == tok.mask_id) == (noisy["z"] != batch["tokens"])).all()
  noisy = corrupt(batch, jax.random.PRNGKey(3))
  objective, metrics = model.loss(noisy, train=False)
  per_token = model.process.nelbo(
      model.process.log_prob_of(model.denoise(noisy["z"], noisy["t"]), batch["tokens"]),
      noisy["z"], noisy["t"], noisy["scored"])
  assert float(jnp.abs(per_token[given]).max()) == 0.0  # the prompt is never scored
  expected = sum(float(per_token[i].sum()) / int(lengths[i]) for i in range(2))
  np.testing.assert_allclose(float(objective), expected, rtol=1e-5)
  assert int(metrics["norm"]) == 2 and int(metrics["tokens"]) == int(lengths.sum())
  np.testing.assert_allclose(float(metrics["nelbo"]), float(per_token.sum()), rtol=1e-5)
  _, token_model = _model(tok, **{"diffusion.loss_norm": "token"})
  total, token_metrics = token_model.loss(noisy, train=False)
  assert "norm" not in token_metrics
  np.testing.assert_allclose(float(total), float(per_token.sum()), rtol=1e-5)


def test_decoding_cuts_at_eos_and_at_every_pad(tok):
  words = tok.encode("the quick brown fox jumps").tolist()
  given = [True, True] + [False] * (len(words) + 2)
  prompt = [tok.bos_id, tok.eos_id]  # a given eos never ends the response
  stops = [tok.eos_id, tok.pad_id, *tok.reserved_pad_ids]
  assert len(stops) == 9
  for stop in stops:
    row = prompt + words[:2] + [stop] + words[2:] + [tok.eos_id]
    assert sample_text.cut(row, given, tok) == prompt + words[:2], stop
    row = prompt + [stop] + words + [tok.eos_id]
    assert sample_text.cut(row, given, tok) == prompt  # an empty response
  assert sample_text.cut(prompt + words + [tok.mask_id, tok.mask_id], given,
                         tok) == prompt + words + [tok.mask_id, tok.mask_id]


def test_lora_adapters_absent_at_rank_zero_and_start_at_the_base(tok):
  _, plain = _model(tok)
  _, adapted = _model(tok, **{"model.lora_rank": 4})
  base = pretrained.flat(nnx.to_pure_dict(nnx.state(plain)))
  full = pretrained.flat(nnx.to_pure_dict(nnx.state(adapted)))
  assert not any("lora" in k for k in base)
  extra = sorted(set(full) - set(base))
  assert len(extra) == 2 * 2 * 4 and all("/lora_" in k for k in extra)
  assert full["net/blocks/0/attn/lora_a_wqkv"].shape == (32, 4)
  assert full["net/blocks/0/attn/lora_b_wqkv"].shape == (4, 3, 2, 16)
  # The base's values into the adapted model: the adapters keep their own initialisation.
  params = pretrained.unflat_like(nnx.to_pure_dict(nnx.state(adapted)), base)
  nnx.update(adapted, params)
  z = jnp.asarray(np.random.default_rng(0).integers(0, tok.vocab_size - 20, (2, 12)))
  t = jnp.full((2, 12), 0.5)
  np.testing.assert_allclose(adapted.denoise(z, t), plain.denoise(z, t), atol=1e-5)
  b = pretrained.flat(nnx.to_pure_dict(nnx.state(adapted)))["net/blocks/0/mlp/lora_b_w_in"]
  params = pretrained.unflat_like(nnx.to_pure_dict(nnx.state(adapted)),
                                  {"net/blocks/0/mlp/lora_b_w_in": np.ones_like(b)})
  nnx.update(adapted, params)
  assert float(jnp.abs(adapted.denoise(z, t) - plain.denoise(z, t)).max()) > 1e-3


TINY = {"model.width": 32, "model.depth": 2, "model.heads": 2, "train.batch_size": 8,
        "train.warmup_steps": 1, "train.progress": False, "train.steps": 2,
        "train.eval_batches": 1, "train.log_every": 1, "train.async_checkpoint": False}


def test_lora_retrofit_from_a_pretrained_workdir(quickstart, tmp_path):
  """A quickstart base, then the instruct `lora` run over it: the instruct data with rainbow
  padding, the base's tokenizer, adapters and the output bias trained, the rest frozen."""
  base_dir = str(tmp_path / "base")
  loop.train(config_lib.from_file(str(ROOT / "configs/quickstart.py:bpe"), **{
      "data.data_dir": quickstart.data.data_dir, "data.seq_len": 32, **TINY}), base_dir)
  tuned_dir = str(tmp_path / "lora")
  config = config_lib.from_file(str(ROOT / "configs/instruct.py:lora"), **{
      "data.data_dir": quickstart.data.data_dir, "data.seq_len": 48, "data.source_len": 16,
      "train.init_from": base_dir, "train.lr": 1e-2, **TINY})
  loop.train(config, tuned_dir)
  base = pretrained.flat(jax.device_get(nnx.to_pure_dict(nnx.state(
      restore.load(base_dir)[2]))))
  _, tuned_tok, model, _ = restore.load(tuned_dir, which="params")
  tuned = pretrained.flat(jax.device_get(nnx.to_pure_dict(nnx.state(model))))
  assert tuned_tok.fingerprint == restore.load(base_dir)[1].fingerprint
  for path, value in base.items():
    if path == "net/unembed_bias":
      assert not np.array_equal(tuned[path], value)
    else:
      np.testing.assert_array_equal(tuned[path], value, err_msg=path)
  moved = [p for p in tuned if "lora_b" in p and np.abs(tuned[p]).max() > 0]
  assert len(moved) == 8  # every adapter's B left zero
